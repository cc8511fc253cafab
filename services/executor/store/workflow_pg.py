"""PostgreSQL: a handler run's checkpoint as ONE statement, run on the pool's asyncpg connection.

A checkpoint through SQLAlchemy was five round trips (BEGIN, the compare-and-set
UPDATE, the mutation upsert, the journal INSERT, COMMIT), each a wake-up of the
server and of this process, with SQLAlchemy's execute path (bind and result
processing, greenlet hops) around each. Here the three writes are one statement,
data-modifying CTEs, run in autocommit, so one implicit transaction:

    WITH moved AS (UPDATE executor_handler_runs SET ... WHERE <key, phase, revision>
                   RETURNING revision),
         ledger AS (INSERT INTO executor_mutations SELECT <the row> FROM moved
                    ON CONFLICT (namespace, handler_run_id) DO UPDATE SET ...),
         journal AS (INSERT INTO executor_journal_outbox
                     SELECT ... FROM moved, unnest(<the records' columns>) ...)
    SELECT revision FROM moved

The mutation and the journal records come `FROM moved`: a compare-and-set that
matches no row writes nothing at all, exactly like the transaction it replaces.
Atomicity, the guard and durability (a synchronous commit) are the same; the
statement either commits whole or not at all. A run created is likewise one
INSERT ... ON CONFLICT DO NOTHING with its journal.

The SQL is built once per shape (the columns set, the phases expected, with or
without a mutation) and asyncpg prepares it once per connection. Every
parameter is cast in the SQL (`$n::text`, JSON columns from text) so the
types never depend on inference. The run is updated by its ctid, found by a
seek in the primary key's order (see `advance_shape`): on a table without
statistics (autovacuum off, or a new table) a generic plan of `namespace = $1
AND handler_run_id = $2` chose the (namespace, session_id) index and filtered
every run of the namespace, and kept that plan after the table filled.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Column, Float, Integer
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import greenlet_spawn

from conveyor_executor.store.base import JournalDraft
from conveyor_executor.store.sql import journal_rows
from conveyor_executor.store.tables import handler_runs, journal_outbox, mutations

_KEYS = ("namespace", "handler_run_id")
_JOURNAL_COLUMNS = (
    "type",
    "namespace",
    "at",
    "subjects",
    "correlation_id",
    "trace_id",
    "attributes",
)


def _cast(column: Column[Any]) -> tuple[str, bool]:
    """(the SQL type a parameter for `column` is cast to, whether it is JSON sent as text)."""
    kind = column.type
    if isinstance(kind, JSON):
        return "text", True
    if isinstance(kind, BigInteger):
        return "bigint", False
    if isinstance(kind, Integer):
        return "integer", False
    if isinstance(kind, Float):
        return "float8", False
    if isinstance(kind, Boolean):
        return "boolean", False
    return "text", False


def _param(column: Column[Any], n: int) -> str:
    cast, is_json = _cast(column)
    return f"${n}::{cast}::json" if is_json else f"${n}::{cast}"


def _value(column: Column[Any], value: Any) -> Any:
    return json.dumps(value) if value is not None and _cast(column)[1] else value


class _Shape:
    """One checkpoint statement: its SQL and the order its parameters are bound in."""

    def __init__(
        self, sql: str, run_columns: Sequence[str], ledger: bool, key_params: Sequence[str]
    ) -> None:
        self.sql = sql
        self.run_columns = tuple(run_columns)
        self.ledger = ledger
        self.key_params = tuple(key_params)


def _journal_cte(start: int, source: str) -> tuple[str, int]:
    arrays = ", ".join(
        f"${start + i}::{'bigint' if c == 'at' else 'text'}[]"
        for i, c in enumerate(_JOURNAL_COLUMNS)
    )
    picked = ", ".join(
        f"j.{c}::json" if isinstance(journal_outbox.c[c].type, JSON) else f"j.{c}"
        for c in _JOURNAL_COLUMNS
    )
    sql = (
        f"journal AS (INSERT INTO {journal_outbox.name} ({', '.join(_JOURNAL_COLUMNS)}) "
        f"SELECT {picked} FROM {source}, unnest({arrays}) WITH ORDINALITY "
        f"AS j({', '.join(_JOURNAL_COLUMNS)}, n) ORDER BY j.n)"
    )
    return sql, start + len(_JOURNAL_COLUMNS)


def _ledger_cte(start: int) -> tuple[str, int]:
    columns = [c for c in mutations.c]
    values = ", ".join(_param(c, start + i) for i, c in enumerate(columns))
    updates = ", ".join(f"{c.name} = EXCLUDED.{c.name}" for c in columns if c.name not in _KEYS)
    sql = (
        f"ledger AS (INSERT INTO {mutations.name} ({', '.join(c.name for c in columns)}) "
        f"SELECT {values} FROM moved "
        f"ON CONFLICT ({', '.join(_KEYS)}) DO UPDATE SET {updates})"
    )
    return sql, start + len(columns)


def advance_shape(
    columns: tuple[str, ...], expect: tuple[str, ...], guarded: bool, ledger: bool
) -> _Shape:
    sets = [f"{name} = {_param(handler_runs.c[name], i + 1)}" for i, name in enumerate(columns)]
    sets.append("revision = revision + 1")
    n = len(columns) + 1
    key = f"namespace = ${n}::text AND handler_run_id = ${n + 1}::text"
    # The row by its ctid, found by a seek in the primary key's own order: no other index
    # can serve it, so no plan (a generic one made while the table was empty included)
    # reaches the row through the (namespace, ...) prefix of another index, which scans
    # every run of the namespace (the planner's choice on a table without statistics).
    seek = (
        f"SELECT ctid FROM {handler_runs.name} "
        f"WHERE (namespace, handler_run_id) >= (${n}::text, ${n + 1}::text) "
        "ORDER BY namespace, handler_run_id LIMIT 1"
    )
    where = f"ctid = ({seek}) AND {key} AND phase = ANY(${n + 2}::text[])"
    key_params = ["namespace", "handler_run_id", "expect"]
    n += 3
    if guarded:
        where += f" AND revision = ${n}::integer"
        key_params.append("revision")
        n += 1
    ctes = [
        f"moved AS (UPDATE {handler_runs.name} SET {', '.join(sets)} WHERE {where} "
        "RETURNING revision)"
    ]
    if ledger:
        cte, n = _ledger_cte(n)
        ctes.append(cte)
    cte, n = _journal_cte(n, "moved")
    ctes.append(cte)
    sql = f"WITH {', '.join(ctes)} SELECT revision FROM moved"
    return _Shape(sql, columns, ledger, key_params)


def _create_sql() -> str:
    columns = list(handler_runs.c)
    values = ", ".join(_param(c, i + 1) for i, c in enumerate(columns))
    journal, _ = _journal_cte(len(columns) + 1, "created")
    return (
        f"WITH created AS (INSERT INTO {handler_runs.name} "
        f"({', '.join(c.name for c in columns)}) VALUES ({values}) "
        "ON CONFLICT DO NOTHING RETURNING handler_run_id), "
        f"{journal} SELECT handler_run_id FROM created"
    )


_CREATE_SQL = _create_sql()


def _journal_arrays(drafts: Sequence[JournalDraft]) -> list[list[Any]]:
    rows = journal_rows(drafts)
    arrays: list[list[Any]] = []
    for name in _JOURNAL_COLUMNS:
        column = journal_outbox.c[name]
        arrays.append([_value(column, row[name]) for row in rows])
    return arrays


class PgCheckpoints:
    """handler_run_create and handler_run_advance's writes as one statement each."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._shapes: dict[tuple[tuple[str, ...], tuple[str, ...], bool, bool], _Shape] = {}

    async def create(self, row: Mapping[str, Any], journal: Sequence[JournalDraft]) -> bool:
        """Insert the run with its journal; False (nothing written) when its id exists."""
        args = [_value(c, row[c.name]) for c in handler_runs.c]
        args += _journal_arrays(journal)
        return bool(await self._fetch(_CREATE_SQL, args))

    async def advance(
        self,
        key: Mapping[str, Any],
        values: Mapping[str, Any],
        mutation_row: Mapping[str, Any] | None,
        journal: Sequence[JournalDraft],
    ) -> int | None:
        """The run's new revision, or None when the compare-and-set matched no row (then
        nothing was written). `key`: namespace, handler_run_id, expect (phase values),
        revision (None: any)."""
        columns = tuple(sorted(values))
        guarded = key["revision"] is not None
        shape_key = (columns, tuple(key["expect"]), guarded, mutation_row is not None)
        shape = self._shapes.get(shape_key)
        if shape is None:
            shape = advance_shape(*shape_key)
            self._shapes[shape_key] = shape
        args = [_value(handler_runs.c[c], values[c]) for c in columns]
        args += [list(key[k]) if k == "expect" else key[k] for k in shape.key_params]
        if mutation_row is not None:
            args += [_value(c, mutation_row[c.name]) for c in mutations.c]
        args += _journal_arrays(journal)
        rows = await self._fetch(shape.sql, args)
        return int(rows[0][0]) if rows else None

    async def _fetch(self, sql: str, args: Sequence[Any]) -> list[Any]:
        """One statement in autocommit on a pooled connection (no BEGIN/COMMIT round trips);
        a connection whose statement failed is not reused (it may be broken)."""
        pooled = await self._engine.raw_connection()
        try:
            driver = pooled.driver_connection
            assert driver is not None  # a checked-out connection has its asyncpg connection
            rows: list[Any] = await driver.fetch(sql, *args)
        except asyncio.CancelledError:  # mid-statement: back to the pool, as AsyncConnection does
            await asyncio.shield(greenlet_spawn(pooled.close))
            raise
        except BaseException:
            await asyncio.shield(greenlet_spawn(pooled.invalidate))
            raise
        await greenlet_spawn(pooled.close)
        return rows
