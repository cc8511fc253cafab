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

Only for connections in autocommit: on a connection inside `begin()`,
SQLAlchemy starts the transaction lazily on its own first statement, so a
statement sent past it would run outside the transaction.

A connection lost mid-statement is invalidated (never handed out again) and
the call fails with `DatabaseUnavailable` (UNAVAILABLE: retry with backoff).
The statement may have committed before the loss: a submit retried with its
idempotency key still makes one order, and orders leased by a lost lease call
come back when that lease expires.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import asyncpg
from sqlalchemy import TextClause
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection

from conveyor_queue.errors import DatabaseUnavailable

# The connection is gone: it must not go back to the pool.
_DISCONNECTS = (asyncpg.exceptions.ConnectionDoesNotExistError, asyncpg.InterfaceError, OSError)


class RawStatements:
    """Runs queries.py statements on asyncpg directly; compiles each statement once."""

    def __init__(self, dialect: Dialect) -> None:
        self._dialect = dialect
        # Keyed by identity: the statements are module constants or memoised per shape.
        self._compiled: dict[int, tuple[TextClause, str, tuple[str, ...]]] = {}

    def _sql(self, clause: TextClause) -> tuple[str, tuple[str, ...]]:
        entry = self._compiled.get(id(clause))
        if entry is None or entry[0] is not clause:
            compiled = clause.compile(dialect=self._dialect)
            entry = (clause, compiled.string, tuple(compiled.positiontup or ()))
            self._compiled[id(clause)] = entry
        return entry[1], entry[2]

    async def fetch(
        self, conn: AsyncConnection, clause: TextClause, params: Mapping[str, Any]
    ) -> list[asyncpg.Record]:
        """The statement's rows, on `conn` (a connection in autocommit)."""
        sql, names = self._sql(clause)
        driver = (await conn.get_raw_connection()).driver_connection
        try:
            return await driver.fetch(sql, *[params[name] for name in names])
        except _DISCONNECTS as exc:
            await conn.invalidate()
            raise DatabaseUnavailable() from exc
