"""Which database errors mean "out of reach, retry" (UNAVAILABLE) and which are the statement's."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy import exc

from conveyor_core.db import is_unavailable


def wrapped(orig: BaseException, invalidated: bool = False) -> exc.DBAPIError:
    return exc.DBAPIError("SELECT 1", {}, orig, connection_invalidated=invalidated)


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "refused"),
        wrapped(Exception("server closed the connection"), invalidated=True),
        wrapped(asyncpg.exceptions.ConnectionDoesNotExistError("gone")),
        exc.TimeoutError("QueuePool limit reached"),
    ],
)
def test_lost_or_refused_connections_are_unavailable(error: BaseException) -> None:
    assert is_unavailable(error)


def test_a_cause_chain_is_followed() -> None:
    try:
        try:
            raise OSError(104, "connection reset")
        except OSError as cause:
            raise RuntimeError("the call failed") from cause
    except RuntimeError as error:
        assert is_unavailable(error)


@pytest.mark.parametrize(
    "error",
    [
        ValueError("a bug"),
        exc.IntegrityError("INSERT", {}, asyncpg.exceptions.UniqueViolationError("dup")),
        wrapped(asyncpg.exceptions.UndefinedTableError("no such table")),
    ],
)
def test_statement_and_code_errors_are_not(error: BaseException) -> None:
    assert not is_unavailable(error)
