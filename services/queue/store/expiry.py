"""The sweeper's SQL: expired leases and missed schedule-to-start deadlines.

Safe on several replicas: PostgreSQL rows are taken with SKIP LOCKED and every
update re-checks the state, so each expiry is applied once.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from conveyor_core.clock import to_micros
from conveyor_queue.domain.model import Failure, TimeoutKind, WorkOrder, WorkOrderState
from conveyor_queue.domain.retry import after_failed_attempt, timeout_failure
from conveyor_queue.store.history import event_row, insert_events
from conveyor_queue.store.rows import failure_to_json, order_from_row
from conveyor_queue.store.tables import work_orders

if TYPE_CHECKING:
    from conveyor_queue.store.sql import SqlWorkOrderStore

wo = work_orders.c


def expiry_kind(row: Any, now_us: int) -> TimeoutKind:
    """Which clock ended a lease whose lease_expires_at has passed."""
    if row.start_to_close_us and row.leased_at + row.start_to_close_us <= now_us:
        return TimeoutKind.START_TO_CLOSE
    last_beat = row.heartbeat_at or row.leased_at
    if row.heartbeat_timeout_us and last_beat + row.heartbeat_timeout_us <= now_us:
        return TimeoutKind.HEARTBEAT
    return TimeoutKind.LEASE_EXPIRED


async def expire_leases(
    store: SqlWorkOrderStore, conn: AsyncConnection, now: datetime, limit: int
) -> list[WorkOrder]:
    now_us = to_micros(now)
    stmt = (
        select(work_orders)
        .where(wo.state == WorkOrderState.LEASED.value, wo.lease_expires_at <= now_us)
        .order_by(wo.lease_expires_at)
        .limit(limit)
    )
    if store.postgres:
        stmt = stmt.with_for_update(skip_locked=True)
    changed = []
    for row in await conn.execute(stmt):
        kind = expiry_kind(row, now_us)
        failure = timeout_failure(kind)
        current = order_from_row(row._mapping)
        outcome = after_failed_attempt(
            policy=current.spec.retry_policy,
            attempt=current.attempt,
            failure=failure,
            cancel_requested=current.cancel_requested,
            now=now,
        )
        changed.append(
            await store.end_attempt(
                conn,
                row,
                outcome.state,
                outcome.available_at,
                f"{kind.value.lower()} timeout; {outcome.reason}",
                now_us,
                failure=failure,
                timeout_kind=kind,
                actor="sweeper",
            )
        )
    return changed


async def expire_deadlines(
    store: SqlWorkOrderStore, conn: AsyncConnection, now: datetime, limit: int
) -> list[WorkOrder]:
    now_us = to_micros(now)
    picked = (
        select(wo.seq)
        .where(wo.state == WorkOrderState.QUEUED.value, wo.deadline_at <= now_us)
        .order_by(wo.deadline_at)
        .limit(limit)
    )
    if store.postgres:
        picked = picked.with_for_update(skip_locked=True)
    failure = Failure(
        "timeout",
        "not started before its schedule-to-start deadline",
        False,
        {"timeout_kind": TimeoutKind.SCHEDULE_TO_START.value},
    )
    result = await conn.execute(
        update(work_orders)
        .where(wo.seq.in_(picked.scalar_subquery()), wo.state == WorkOrderState.QUEUED.value)
        .values(
            state=WorkOrderState.FAILED.value,
            completed_at=now_us,
            updated_at=now_us,
            timeout_kind=TimeoutKind.SCHEDULE_TO_START.value,
            failure=failure_to_json(failure),
        )
        .returning(*work_orders.columns)
    )
    orders = [order_from_row(row._mapping) for row in result]
    await insert_events(
        conn,
        [
            event_row(
                o,
                WorkOrderState.QUEUED,
                "schedule_to_start timeout",
                actor="sweeper",
                at_us=now_us,
                failure=failure,
                timeout_kind=TimeoutKind.SCHEDULE_TO_START,
            )
            for o in orders
        ],
    )
    return orders
