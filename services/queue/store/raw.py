"""The queue's hottest PostgreSQL statements, run straight on the pool's asyncpg connection.

Submit, plain lease and batch complete are one statement each, and SQLAlchemy's execute path around
them (bind processing, result typing, cursor and row wrapping) cost about as
much CPU as asyncpg itself: measured on the submit statement, 1.1 ms of
client CPU per statement through `AsyncConnection.execute`, 0.6 ms through the
same pooled connection's asyncpg `fetch` (pool checkout included). The queue
server is CPU-bound at 200 single submits/s, so this is latency.

The SQL stays the `text()` in queries.py, compiled once per statement for the
asyncpg dialect (`$n` placeholders). asyncpg's own prepared-statement cache
then applies. Rows come back as asyncpg `Record`s, which `order_from_row`
reads like mappings: the connection's codecs, installed by SQLAlchemy's
dialect, already decode JSON, and asyncpg's UUID is a `uuid.UUID`.

The connection itself comes from the pool without SQLAlchemy's `Connection`
around it: building that, setting and resetting its isolation level, and
closing it cost about as much again as the statement. With no transaction
begun, asyncpg runs each statement in autocommit. Even a bare pool checkout
and check-in (two greenlet hops, the pool's queue, the reset on return) cost
0.08 ms of CPU per statement, a third of the store's share of an order, so
`fetch()` keeps up to `keep` connections checked out between statements (last
in, first out), for each of the two plan modes (see `_set_plan_mode`). One
goes back to the pool when a statement on it was cancelled, and once it has
been in use here for `max_seconds` (the pool's recycle age), so the pool still
replaces old connections; a statement that failed discards its connection.
Not sooner: a connection the hot statements never ran on prepares them and
introspects their array types on first use, which took 50-115 ms on this
machine, so trading kept connections for pooled ones every few seconds showed
as latency spikes.

A connection lost mid-statement is invalidated (never handed out again) and
the call fails with `DatabaseUnavailable` (UNAVAILABLE: retry with backoff).
The statement may have committed before the loss: a submit retried with its
idempotency key still makes one order, and orders leased by a lost lease call
come back when that lease expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from typing import Any

import asyncpg
from sqlalchemy import TextClause, TextualSelect
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.util import greenlet_spawn

from conveyor_core.db import is_unavailable
from conveyor_queue.errors import DatabaseUnavailable


class RawStatements:
    """Runs queries.py statements on pooled asyncpg connections; compiles each statement once."""

    def __init__(self, engine: AsyncEngine, keep: int = 0, max_seconds: float = 1800.0) -> None:
        self._engine = engine
        self._dialect = engine.dialect
        self._keep = keep
        self._max_seconds = max_seconds
        # Per plan mode (`fetch(custom_plans=...)`): a connection keeps its session setting.
        self._kept: dict[bool, list[PoolProxiedConnection]] = {False: [], True: []}
        self._closed = False
        # Keyed by identity: the statements are module constants or memoised per shape.
        self._compiled: dict[int, tuple[TextClause | TextualSelect, str, tuple[str, ...]]] = {}

    def _sql(self, clause: TextClause | TextualSelect) -> tuple[str, tuple[str, ...]]:
        entry = self._compiled.get(id(clause))
        if entry is None or entry[0] is not clause:
            compiled = clause.compile(dialect=self._dialect)
            entry = (clause, compiled.string, tuple(compiled.positiontup or ()))
            self._compiled[id(clause)] = entry
        return entry[1], entry[2]

    async def fetch(
        self,
        clause: TextClause | TextualSelect,
        params: Mapping[str, Any],
        *,
        custom_plans: bool = False,
    ) -> list[asyncpg.Record]:
        """The rows of one statement that is atomic alone, run in autocommit.

        `custom_plans`: PostgreSQL plans every execution with its parameters
        instead of switching to a generic plan (see `_set_plan_mode`).
        """
        sql, names = self._sql(clause)
        kept = self._kept[custom_plans]
        pooled = kept.pop() if kept else await self._engine.raw_connection()
        try:
            driver = pooled.driver_connection
            assert driver is not None  # a checked-out connection has its asyncpg connection
            record = _record_info(pooled)
            if record.get("conveyor_custom_plans", False) != custom_plans:
                await _set_plan_mode(driver, custom_plans)
                record["conveyor_custom_plans"] = custom_plans
            rows: list[asyncpg.Record] = await driver.fetch(sql, *[params[name] for name in names])
        except asyncio.CancelledError:  # mid-statement: back to the pool, as AsyncConnection does
            await asyncio.shield(greenlet_spawn(pooled.close))
            raise
        except BaseException as error:
            # Never reused: the error may mean the connection is gone or broken (a
            # terminated backend shows as ConnectionDoesNotExistError, AdminShutdownError
            # or, racing the next statement, InternalClientError). Errors are rare here,
            # and a new pooled connection costs only its set-up.
            await asyncio.shield(greenlet_spawn(pooled.invalidate))
            if is_unavailable(error) or isinstance(error, asyncpg.InternalClientError):
                raise DatabaseUnavailable() from error
            raise
        if len(kept) < self._keep and not self._closed and self._young(pooled):
            kept.append(pooled)
        else:
            await greenlet_spawn(pooled.close)
        return rows

    def _young(self, pooled: PoolProxiedConnection) -> bool:
        """Used here for less than `max_seconds` (stamped on the pool's record of it)."""
        first_used = _record_info(pooled).setdefault("conveyor_hot_since", time.monotonic())
        return bool(time.monotonic() - first_used < self._max_seconds)

    async def close(self) -> None:
        """Give the kept connections back to the pool (before the engine is disposed)."""
        self._closed = True
        kept, self._kept = self._kept, {False: [], True: []}
        for pooled in kept[False] + kept[True]:
            await greenlet_spawn(pooled.close)


async def _set_plan_mode(driver: asyncpg.Connection, custom_plans: bool) -> None:
    """Plan every execution of a prepared statement with its parameters, or back to the default.

    After five executions of one prepared statement on one connection,
    PostgreSQL may switch to a generic plan, made without the parameters. For
    the batch complete that plan is a nested loop over every in-flight order of
    the namespace, filtered against the unnested items (O(in flight x batch);
    EXPLAIN ANALYZE with 250 in flight: 19 ms against 4 ms): a drain on four
    kept connections ran at 6,300-7,100 orders/s with PostgreSQL at 110-130 %
    of a core, and at 10,200-11,700/s at 56-60 % with custom plans. Only the
    statements that need it pay for planning every time: custom plans for
    submit and lease too cost PostgreSQL a tenth of a core more at 200
    orders/s. The setting stays with the connection, also back in the pool.
    """
    setting = "SET plan_cache_mode = force_custom_plan" if custom_plans else "RESET plan_cache_mode"
    with contextlib.suppress(asyncpg.PostgresError):  # before PostgreSQL 12: no such setting
        await driver.execute(setting)


def _record_info(pooled: PoolProxiedConnection) -> dict[Any, Any]:
    """The pool's lasting record of this connection (a checked-out one always has it)."""
    record = pooled.record_info
    assert record is not None
    return record
