"""The correlation id ContextVar helpers."""

from __future__ import annotations

import contextvars

import pytest

from conveyor_core.context import (
    correlation_scope,
    ensure_correlation_id,
    get_correlation_id,
    is_valid_correlation_id,
    new_correlation_id,
)


def in_fresh_context(function: object) -> object:
    return contextvars.Context().run(function)  # type: ignore[arg-type]


def test_new_correlation_id_is_32_hex_and_not_set() -> None:
    def body() -> str:
        correlation_id = new_correlation_id()
        assert get_correlation_id() is None
        return correlation_id

    correlation_id = in_fresh_context(body)
    assert isinstance(correlation_id, str)
    assert len(correlation_id) == 32
    int(correlation_id, 16)
    assert new_correlation_id() != new_correlation_id()


def test_ensure_sets_once_then_keeps() -> None:
    def body() -> tuple[str, str, str | None]:
        first = ensure_correlation_id()
        return first, ensure_correlation_id(), get_correlation_id()

    first, second, current = in_fresh_context(body)  # type: ignore[misc]
    assert first == second == current


def test_scope_sets_and_restores() -> None:
    def body() -> None:
        with correlation_scope("outer"):
            with correlation_scope() as inner:
                assert get_correlation_id() == inner != "outer"
            assert get_correlation_id() == "outer"
        assert get_correlation_id() is None

    in_fresh_context(body)


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("0f3c2a", True),
        ("req-42.retry_1:a/b", True),
        ("x" * 128, True),
        ("x" * 129, False),
        ("", False),
        ("two words", False),
        ("line\nbreak", False),
    ],
)
def test_inbound_ids_are_validated(value: str, valid: bool) -> None:
    assert is_valid_correlation_id(value) is valid
