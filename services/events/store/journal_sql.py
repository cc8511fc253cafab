"""SQLAlchemy implementation of JournalStore for PostgreSQL and SQLite.

Positions come from the single row of `events_journal_head`:
`UPDATE ... SET last_position = last_position + n RETURNING last_position`
takes the row lock, which is held until the append transaction commits. So
appends are serialised at that one statement, commit in position order, and
positions are gap-free: a reader that saw position p will never later find a
record below p that it missed. A rolled-back append rolls its allocation back
with it, so no position is ever skipped. SQLite has a single writer, which
gives the same guarantee.

Idempotency is by record id (unique index). Ids already stored are looked up
before the allocation; if a concurrent append stores one of them in between,
the insert fails on the unique index, the whole transaction (allocation
included) rolls back, and the append is retried, finding it this time.

On PostgreSQL an append is one statement (`APPEND_POSTGRES`), run in
autocommit: look the ids up, allocate, insert the records and their subjects
from arrays, instead of BEGIN, a look-up, the allocation, an INSERT per record
and one per subject, and COMMIT. The head row's lock is held to the end of that
statement's transaction, so the guarantees above hold unchanged. The look-up
is a seek in the id index's own order per id (`id >= $1 ORDER BY id LIMIT 1`),
which no other plan can serve: written as `id IN (...)`, a journal without
statistics was read whole for every append (docs/benchmarks.md, "Round 3").
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import RowMapping, TextClause, exists, insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from conveyor_core.clock import from_micros, to_micros
from conveyor_core.errors import Aborted
from conveyor_events.domain.journal import JournalDraft, JournalPage, JournalRecord
from conveyor_events.store.journal_base import JournalAppendParams, JournalReadParams
from conveyor_events.store.tables import journal, journal_head, journal_subjects

log = logging.getLogger(__name__)

j = journal.c
js = journal_subjects.c

#: Reserve `n` positions: locks the head row until the transaction ends.
ALLOCATE_POSITIONS: TextClause = text(
    "UPDATE events_journal_head SET last_position = last_position + CAST(:n AS BIGINT) "
    "WHERE id = 1 RETURNING last_position"
)

#: The whole append on PostgreSQL (see the module docstring). The drafts come as arrays
#: (ids distinct), their subjects as (draft's 1-based index, kind, value) arrays. Returns
#: (id, position) of every draft: found, or placed at head + 1, head + 2, ... in order.
APPEND_POSTGRES: TextClause = text("""
    WITH v AS (
        SELECT * FROM unnest(
            CAST(:ids AS text[]), CAST(:types AS text[]), CAST(:namespaces AS text[]),
            CAST(:subjects AS json[]), CAST(:correlation_ids AS text[]),
            CAST(:trace_ids AS text[]), CAST(:times AS bigint[]), CAST(:attributes AS json[])
        ) WITH ORDINALITY AS v(id, type, namespace, subjects, correlation_id, trace_id,
                               time, attributes, ord)
    ),
    found AS MATERIALIZED (
        SELECT v.id, e.position FROM v
        CROSS JOIN LATERAL (
            SELECT j.id, j.position FROM events_journal AS j
            WHERE j.id >= v.id ORDER BY j.id LIMIT 1
        ) AS e
        WHERE e.id = v.id
    ),
    new AS MATERIALIZED (
        SELECT v.*, row_number() OVER (ORDER BY v.ord) AS k FROM v
        WHERE v.id NOT IN (SELECT id FROM found)
    ),
    head AS (
        UPDATE events_journal_head
        SET last_position = last_position + (SELECT count(*) FROM new)
        WHERE id = 1 AND EXISTS (SELECT 1 FROM new)
        RETURNING last_position
    ),
    placed AS MATERIALIZED (
        SELECT new.*, head.last_position - (SELECT count(*) FROM new) + new.k AS position
        FROM new CROSS JOIN head
    ),
    records AS (
        INSERT INTO events_journal
            (position, id, type, namespace, subjects, correlation_id, trace_id, time, attributes)
        SELECT position, id, type, namespace, subjects, correlation_id, trace_id, time, attributes
        FROM placed
    ),
    subjects AS (
        INSERT INTO events_journal_subjects (position, kind, value)
        SELECT placed.position, s.kind, s.value
        FROM unnest(CAST(:subject_of AS bigint[]), CAST(:subject_kinds AS text[]),
                    CAST(:subject_values AS text[])) AS s(ord, kind, value)
        JOIN placed ON placed.ord = s.ord
    )
    SELECT id, position FROM found
    UNION ALL
    SELECT id, position FROM placed
""")

#: Appends retried after losing a race on a record id (each retry finds the winner's row).
APPEND_ATTEMPTS = 3


class SqlJournalStore:
    """JournalStore over one async engine (PostgreSQL or SQLite)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._postgres = engine.dialect.name == "postgresql"
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")

    async def journal_append(self, params: JournalAppendParams) -> list[int]:
        if not params.drafts:
            return []
        append = self._append_postgres if self._postgres else self._append_once
        for attempt in range(1, APPEND_ATTEMPTS + 1):
            try:
                return await append(params)
            except IntegrityError:
                log.info("journal append raced on a record id; retrying (attempt %d)", attempt)
        raise Aborted("journal append kept conflicting with concurrent appends; retry")

    async def _append_once(self, params: JournalAppendParams) -> list[int]:
        unique: dict[str, JournalDraft] = {}
        for draft in params.drafts:
            unique.setdefault(draft.id, draft)  # a repeated id refers to its first occurrence
        async with self._engine.begin() as conn:
            positions = await self._existing_positions(conn, list(unique))
            new = [d for d in unique.values() if d.id not in positions]
            if new:
                last = (await conn.execute(ALLOCATE_POSITIONS, {"n": len(new)})).scalar_one()
                first = last - len(new) + 1
                now_us = to_micros(params.now)
                rows = [_record_row(first + i, d, now_us) for i, d in enumerate(new)]
                await conn.execute(insert(journal), rows)
                subject_rows = _subject_rows(rows)
                if subject_rows:
                    await conn.execute(insert(journal_subjects), subject_rows)
                positions.update({row["id"]: row["position"] for row in rows})
        return [positions[d.id] for d in params.drafts]

    async def _append_postgres(self, params: JournalAppendParams) -> list[int]:
        unique: dict[str, JournalDraft] = {}
        for draft in params.drafts:
            unique.setdefault(draft.id, draft)  # a repeated id refers to its first occurrence
        drafts = list(unique.values())
        now_us = to_micros(params.now)
        subjects = [(i, k, v) for i, d in enumerate(drafts, 1) for k, v in d.subjects.items()]
        values = {
            "ids": [d.id for d in drafts],
            "types": [d.type for d in drafts],
            "namespaces": [d.namespace for d in drafts],
            "subjects": [json.dumps(dict(d.subjects)) for d in drafts],
            "correlation_ids": [d.correlation_id for d in drafts],
            "trace_ids": [d.trace_id for d in drafts],
            "times": [to_micros(d.time) if d.time is not None else now_us for d in drafts],
            "attributes": [json.dumps(dict(d.attributes)) for d in drafts],
            "subject_of": [i for i, _, _ in subjects],
            "subject_kinds": [k for _, k, _ in subjects],
            "subject_values": [v for _, _, v in subjects],
        }
        async with self._autocommit.connect() as conn:
            result = await conn.execute(APPEND_POSTGRES, values)
            positions = {row.id: row.position for row in result}
        return [positions[d.id] for d in params.drafts]

    async def _existing_positions(self, conn: AsyncConnection, ids: list[str]) -> dict[str, int]:
        result = await conn.execute(select(j.id, j.position).where(j.id.in_(ids)))
        return {row.id: row.position for row in result}

    async def journal_read(self, params: JournalReadParams) -> JournalPage:
        after = params.after_position
        async with self._engine.connect() as conn:
            # The head first: every record at or below it is committed (appends
            # commit in position order), so the records query sees all of them.
            head = await _head(conn)
            if head <= after:
                return JournalPage([], 0 if params.newest_first else after, head)
            result = await conn.execute(_read_statement(params, head))
            records = [_record_from_row(row._mapping) for row in result]
        if len(records) == params.limit:
            return JournalPage(records, records[-1].position, head)
        return JournalPage(records, 0 if params.newest_first else head, head)

    async def journal_head(self) -> int:
        async with self._engine.connect() as conn:
            return await _head(conn)


async def _head(conn: AsyncConnection) -> int:
    result = await conn.execute(select(journal_head.c.last_position).where(journal_head.c.id == 1))
    return int(result.scalar_one())


def _read_statement(params: JournalReadParams, head: int) -> Any:
    f = params.filter
    conditions = [j.position > params.after_position, j.position <= head]
    if params.newest_first and params.before_position:
        conditions.append(j.position < params.before_position)
    if f.namespace:
        conditions.append(j.namespace == f.namespace)
    if f.type_prefix:
        conditions.append(j.type.startswith(f.type_prefix, autoescape=True))
    if f.correlation_id:
        conditions.append(j.correlation_id == f.correlation_id)
    if f.subject:
        conditions.append(
            exists().where(js.position == j.position, js.value == f.subject),
        )
    order = j.position.desc() if params.newest_first else j.position
    return select(journal).where(*conditions).order_by(order).limit(params.limit)


def _record_row(position: int, draft: JournalDraft, now_us: int) -> dict[str, Any]:
    return {
        "position": position,
        "id": draft.id,
        "type": draft.type,
        "namespace": draft.namespace,
        "subjects": dict(draft.subjects),
        "correlation_id": draft.correlation_id,
        "trace_id": draft.trace_id,
        "time": to_micros(draft.time) if draft.time is not None else now_us,
        "attributes": dict(draft.attributes),
    }


def _subject_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"position": row["position"], "kind": kind, "value": value}
        for row in rows
        for kind, value in row["subjects"].items()
    ]


def _record_from_row(m: RowMapping | Mapping[str, Any]) -> JournalRecord:
    return JournalRecord(
        position=m["position"],
        id=m["id"],
        type=m["type"],
        namespace=m["namespace"],
        subjects=dict(m["subjects"] or {}),
        correlation_id=m["correlation_id"],
        trace_id=m["trace_id"],
        time=from_micros(m["time"]),
        attributes=dict(m["attributes"] or {}),
    )
