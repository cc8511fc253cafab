"""The connections submit, plain lease and batch complete keep between statements (store/raw.py).

PostgreSQL only: SQLite has a single pooled connection and no such path.
"""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from conveyor_core import db
from conveyor_core.settings import CoreSettings
from conveyor_queue.store.raw import RawStatements

BACKEND_PID = text("SELECT pg_backend_pid() AS pid")
FAILS = text("SELECT 1 / 0 AS never")


@pytest.fixture
async def engine(postgres_core: CoreSettings):  # type: ignore[no-untyped-def]
    engine = db.create_engine(postgres_core.database_url, postgres_core)
    yield engine
    await engine.dispose()


def _checked_out(engine: AsyncEngine) -> int:
    return engine.sync_engine.pool.checkedout()  # type: ignore[attr-defined, no-any-return]


async def _pid(raw: RawStatements) -> int:
    return (await raw.fetch(BACKEND_PID, {}))[0]["pid"]  # type: ignore[no-any-return]


async def test_kept_connections_are_reused_and_given_back_on_close(engine: AsyncEngine) -> None:
    raw = RawStatements(engine, keep=1, max_seconds=300)
    first = await _pid(raw)
    assert await _pid(raw) == first  # the same connection, no pool checkout
    assert _checked_out(engine) == 1
    await raw.close()
    assert _checked_out(engine) == 0
    await _pid(raw)  # after close(): checked out per statement again
    assert _checked_out(engine) == 0


async def test_nothing_is_kept_without_keep_or_past_max_seconds(engine: AsyncEngine) -> None:
    await _pid(RawStatements(engine, keep=0))
    assert _checked_out(engine) == 0
    raw = RawStatements(engine, keep=2, max_seconds=1e-6)
    await _pid(raw)  # its age is counted from here
    await _pid(raw)
    assert _checked_out(engine) == 0  # older than max_seconds: back to the pool


async def test_a_connection_whose_statement_failed_is_not_kept(
    engine: AsyncEngine,
) -> None:
    raw = RawStatements(engine, keep=1, max_seconds=300)
    with pytest.raises(asyncpg.DivisionByZeroError):
        await raw.fetch(FAILS, {})
    assert _checked_out(engine) == 0


async def test_a_kept_connection_the_server_dropped_fails_one_statement_then_is_replaced(
    engine: AsyncEngine,
) -> None:
    raw = RawStatements(engine, keep=1, max_seconds=300)
    dropped = await _pid(raw)
    async with engine.connect() as admin:
        await admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": dropped})
    # How the loss shows depends on whether the server's goodbye was read before the
    # statement went out; whichever it is, the connection is discarded.
    with pytest.raises(Exception):  # noqa: B017
        await _pid(raw)
    assert await _pid(raw) != dropped
    await raw.close()
    assert _checked_out(engine) == 0


async def test_statements_that_ask_for_it_are_planned_with_their_parameters_every_time(
    engine: AsyncEngine,
) -> None:
    """A generic plan made the batch complete scan every in-flight order (store/raw.py)."""
    raw = RawStatements(engine, keep=1)
    mode = text("SELECT current_setting('plan_cache_mode') AS mode, pg_backend_pid() AS pid")
    custom = (await raw.fetch(mode, {}, custom_plans=True))[0]
    default = (await raw.fetch(mode, {}))[0]
    assert (custom["mode"], default["mode"]) == ("force_custom_plan", "auto")
    assert custom["pid"] != default["pid"]  # each mode keeps its own connections
    assert (await raw.fetch(mode, {}, custom_plans=True))[0] == custom
    await raw.close()
    # A connection back in the pool with the setting gets the default again when needed.
    raw = RawStatements(engine, keep=0)
    assert (await raw.fetch(mode, {}, custom_plans=True))[0]["mode"] == "force_custom_plan"
    assert {(await raw.fetch(mode, {}))[0]["mode"] for _ in range(3)} == {"auto"}
