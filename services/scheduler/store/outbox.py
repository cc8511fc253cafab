"""The scheduler's journal outbox: records written with each fire, delivered by OutboxRelay.

Journal records (ids `scheduler/<seq>`, deterministic so re-delivery is a no-op):

* `scheduler.schedule.fired`: subjects schedule, job, fire; attributes slot_time,
  kind, job_version, endpoints;
* `scheduler.slot.skipped` / `scheduler.slot.missed`: subjects schedule, job,
  fire; attributes slot_time, reason.

Only the leader runs the relay, so claims are plain reads; the mark is a
second short transaction (a crash between append and mark re-delivers).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from conveyor_core.clock import Clock, SystemClock, from_micros, to_micros
from conveyor_core.outbox import OutboxBatch, OutboxRecord, trace_id_of
from conveyor_scheduler.store.tables import journal_outbox

#: Coordination channel notified after fires were written.
JOURNAL_CHANNEL = "outbox:scheduler"
#: Channel notified after queue submits were written.
SUBMIT_CHANNEL = "outbox:scheduler-submit"

jo = journal_outbox.c


def journal_record(row: Any) -> OutboxRecord:
    return OutboxRecord(
        id=f"scheduler/{row.seq}",
        type=row.type,
        namespace=row.namespace,
        time=from_micros(row.at),
        subjects=dict(row.subjects),
        correlation_id=row.correlation_id,
        trace_id=trace_id_of(row.traceparent),
        attributes=dict(row.attributes),
    )


@dataclass(frozen=True, slots=True)
class _Batch:
    records: Sequence[OutboxRecord]
    claimed: int
    _outbox: SqlJournalOutbox
    _seqs: Sequence[int]

    async def mark_delivered(self) -> None:
        await self._outbox.mark(self._seqs)


class SqlJournalOutbox:
    """OutboxSource over `scheduler_journal_outbox`."""

    channel = JOURNAL_CHANNEL

    def __init__(self, engine: AsyncEngine, clock: Clock | None = None) -> None:
        self._engine = engine
        self._clock = clock or SystemClock()

    def claim(self, limit: int) -> AbstractAsyncContextManager[OutboxBatch]:
        return self._claim(limit)

    @asynccontextmanager
    async def _claim(self, limit: int) -> AsyncIterator[OutboxBatch]:
        statement = (
            select(journal_outbox).where(jo.journaled_at.is_(None)).order_by(jo.seq).limit(limit)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(statement)).all()
        yield _Batch([journal_record(r) for r in rows], len(rows), self, [r.seq for r in rows])

    async def mark(self, seqs: Sequence[int]) -> None:
        if seqs:
            async with self._engine.begin() as conn:
                await conn.execute(
                    update(journal_outbox)
                    .where(jo.seq.in_(list(seqs)))
                    .values(journaled_at=to_micros(self._clock.now()))
                )

    async def undelivered_count(self) -> int:
        async with self._engine.connect() as conn:
            statement = select(func.count()).where(jo.journaled_at.is_(None))
            return int((await conn.execute(statement.select_from(journal_outbox))).scalar_one())
