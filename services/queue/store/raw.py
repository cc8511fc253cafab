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

The connection itself comes straight from the pool (`connection()`), without
SQLAlchemy's `Connection` around it: building that, setting and resetting its
isolation level, and closing it cost about as much again as the statement
(0.11 ms of CPU per checkout against 0.06 for the bare pool checkout). With no
transaction begun, asyncpg runs each statement in autocommit.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from sqlalchemy import TextClause
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import greenlet_spawn

# The connection is gone: it must not go back to the pool.
_DISCONNECTS = (asyncpg.exceptions.ConnectionDoesNotExistError, asyncpg.InterfaceError, OSError)


class RawStatements:
    """Runs queries.py statements on pooled asyncpg connections; compiles each statement once."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._dialect = engine.dialect
        # Keyed by identity: the statements are module constants or memoised per shape.
        self._compiled: dict[int, tuple[TextClause, str, tuple[str, ...]]] = {}

    def _sql(self, clause: TextClause) -> tuple[str, tuple[str, ...]]:
        entry = self._compiled.get(id(clause))
        if entry is None or entry[0] is not clause:
            compiled = clause.compile(dialect=self._dialect)
            entry = (clause, compiled.string, tuple(compiled.positiontup or ()))
            self._compiled[id(clause)] = entry
        return entry[1], entry[2]

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection's asyncpg connection, for statements that are atomic alone."""
        pooled = await self._engine.raw_connection()
        try:
            yield pooled.driver_connection
        except _DISCONNECTS:
            await asyncio.shield(greenlet_spawn(pooled.invalidate))
            raise
        except BaseException:
            await asyncio.shield(greenlet_spawn(pooled.close))  # as AsyncConnection does
            raise
        await greenlet_spawn(pooled.close)

    async def fetch(
        self, driver: asyncpg.Connection, clause: TextClause, params: Mapping[str, Any]
    ) -> list[asyncpg.Record]:
        """The statement's rows, on `driver` (from `connection()`)."""
        sql, names = self._sql(clause)
        return await driver.fetch(sql, *[params[name] for name in names])  # type: ignore[no-any-return]
