"""Writing an order's history: one row per state change, in the same transaction as the change."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from conveyor_queue.domain.model import Failure, TimeoutKind, WorkOrder, WorkOrderState
from conveyor_queue.store.rows import failure_to_json
from conveyor_queue.store.tables import work_order_events


def event_row(
    order: WorkOrder,
    from_state: WorkOrderState | None,
    reason: str,
    *,
    actor: str,
    at_us: int,
    failure: Failure | None = None,
    timeout_kind: TimeoutKind | None = None,
) -> dict[str, Any]:
    return {
        "work_order_id": order.id,
        "namespace": order.namespace,
        "queue": order.queue,
        "from_state": from_state.value if from_state else None,
        "to_state": order.state.value,
        "at": at_us,
        "attempt": order.attempt,
        "reason": reason,
        "actor": actor,
        "timeout_kind": timeout_kind.value if timeout_kind else None,
        "failure": failure_to_json(failure),
        "correlation_id": order.correlation_id,
        "traceparent": order.traceparent,
    }


async def insert_events(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        await conn.execute(insert(work_order_events), list(rows))
