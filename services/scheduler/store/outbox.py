"""The scheduler's journal outbox: records written with each fire, delivered by OutboxRelay.

Journal records (ids `scheduler/<seq>`, deterministic so re-delivery is a no-op):

* `scheduler.schedule.fired`: subjects schedule, job, fire; attributes slot_time,
  kind, job_version, endpoints;
* `scheduler.slot.skipped` / `scheduler.slot.missed`: subjects schedule, job,
  fire; attributes slot_time, reason.

Claims and marks: conveyor_core.outbox_table.TableOutbox (rows locked on
PostgreSQL, so an old and a new leader relaying at once take disjoint rows).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from conveyor_core.clock import Clock, from_micros
from conveyor_core.outbox import OutboxRecord, trace_id_of
from conveyor_core.outbox_table import TableOutbox
from conveyor_scheduler.store.tables import journal_outbox

#: Coordination channel notified after fires were written.
JOURNAL_CHANNEL = "outbox:scheduler"
#: Channel notified after queue submits were written.
SUBMIT_CHANNEL = "outbox:scheduler-submit"


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


class SqlJournalOutbox(TableOutbox):
    """OutboxSource over `scheduler_journal_outbox`."""

    def __init__(self, engine: AsyncEngine, clock: Clock | None = None) -> None:
        super().__init__(
            engine,
            journal_outbox,
            delivered_column="journaled_at",
            record_of=journal_record,
            channel=JOURNAL_CHANNEL,
            clock=clock,
        )
