"""The executor's journal outbox: records written with the run changes they report.

Rows of `executor_journal_outbox` are delivered by `conveyor_core.outbox.OutboxRelay`
to the event store's JournalService with ids `executor/<seq>` (deterministic,
so a re-delivery is a no-op). Claims and marks: conveyor_core.outbox_table.TableOutbox.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from conveyor_core.clock import Clock, from_micros
from conveyor_core.outbox import OutboxRecord
from conveyor_core.outbox_table import TableOutbox
from conveyor_executor.store.tables import journal_outbox

#: Coordination channel notified when journal rows were written.
OUTBOX_CHANNEL = "outbox:executor"


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


class SqlExecutorOutbox(TableOutbox):
    """OutboxSource over `executor_journal_outbox`."""

    def __init__(self, engine: AsyncEngine, clock: Clock | None = None) -> None:
        super().__init__(
            engine,
            journal_outbox,
            delivered_column="delivered_at",
            record_of=journal_record,
            channel=OUTBOX_CHANNEL,
            clock=clock,
        )
