"""The executor's journal outbox: records written with the run changes they report.

Rows of `executor_journal_outbox` are delivered by `conveyor_core.outbox.OutboxRelay`
to the event store's JournalService with ids `executor/<seq>` (deterministic,
so a re-delivery is a no-op). On PostgreSQL a claim locks its rows
(`FOR UPDATE SKIP LOCKED`) for the length of the append, so relays on several
replicas take disjoint rows; SQLite has one writer: a plain read, then a
short transaction to mark the rows.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from conveyor_core.clock import Clock, SystemClock, from_micros, to_micros
from conveyor_core.outbox import OutboxBatch, OutboxRecord
from conveyor_executor.store.tables import journal_outbox

#: Coordination channel notified when journal rows were written.
OUTBOX_CHANNEL = "outbox:executor"
jc = journal_outbox.c


def journal_record(row: Any) -> OutboxRecord:
    return OutboxRecord(
        id=f"executor/{row.seq}",
        type=row.type,
        namespace=row.namespace,
        time=from_micros(row.at),
        subjects=dict(row.subjects or {}),
        correlation_id=row.correlation_id,
        trace_id=row.trace_id,
        attributes=dict(row.attributes or {}),
    )


@dataclass(frozen=True, slots=True)
class _Batch:
    records: Sequence[OutboxRecord]
    claimed: int
    _mark: Callable[[], Awaitable[None]]

    async def mark_delivered(self) -> None:
        await self._mark()


class SqlExecutorOutbox:
    """OutboxSource over `executor_journal_outbox` (PostgreSQL or SQLite)."""

    channel = OUTBOX_CHANNEL

    def __init__(self, engine: AsyncEngine, clock: Clock | None = None) -> None:
        self._engine = engine
        self._postgres = engine.dialect.name == "postgresql"
        self._clock = clock or SystemClock()

    def claim(self, limit: int) -> AbstractAsyncContextManager[OutboxBatch]:
        return self._claim(limit)

    @asynccontextmanager
    async def _claim(self, limit: int) -> AsyncIterator[OutboxBatch]:
        statement = (
            select(journal_outbox).where(jc.delivered_at.is_(None)).order_by(jc.seq).limit(limit)
        )
        if self._postgres:
            async with self._engine.begin() as conn:  # row locks held until the batch is done
                rows = (await conn.execute(statement.with_for_update(skip_locked=True))).all()
                seqs = [row.seq for row in rows]
                yield _Batch(
                    [journal_record(r) for r in rows], len(rows), lambda: self._mark(conn, seqs)
                )
            return
        async with self._engine.connect() as conn:
            rows = (await conn.execute(statement)).all()
        seqs = [row.seq for row in rows]

        async def mark() -> None:
            async with self._engine.begin() as conn:
                await self._mark(conn, seqs)

        yield _Batch([journal_record(r) for r in rows], len(rows), mark)

    async def _mark(self, conn: AsyncConnection, seqs: Sequence[int]) -> None:
        if seqs:
            await conn.execute(
                update(journal_outbox)
                .where(jc.seq.in_(list(seqs)))
                .values(delivered_at=to_micros(self._clock.now()))
            )

    async def undelivered_count(self) -> int:
        async with self._engine.connect() as conn:
            result = await conn.execute(
                select(func.count()).select_from(journal_outbox).where(jc.delivered_at.is_(None))
            )
            return int(result.scalar_one())
