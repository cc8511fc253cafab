"""The sweeper's SQL: expired leases and missed schedule-to-start deadlines.

Safe on several replicas: PostgreSQL rows are taken with SKIP LOCKED and every
update re-checks the state, so each expiry is applied once.

One bad row never stops a pass (store/poison.py): an order whose row cannot be
read or whose next state cannot be computed is quarantined (FAILED, failure
type `poisoned`) in the pass's transaction, and a batch whose writes the
database refuses is retried one order per transaction.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from conveyor_core.clock import to_micros
from conveyor_queue.domain.model import Failure, TimeoutKind, WorkOrder, WorkOrderState
from conveyor_queue.domain.retry import lease_expiry_plan
from conveyor_queue.store.history import event_row, insert_events
from conveyor_queue.store.poison import Poisoned, decoded_orders, isolated_pass, quarantine
from conveyor_queue.store.rows import failure_to_json, order_from_row
from conveyor_queue.store.tables import work_orders

if TYPE_CHECKING:
    from conveyor_queue.store.sql import SqlWorkOrderStore

wo = work_orders.c
#: The `loop` label of each pass in conveyor.queue.poisoned_items.
LEASE_SWEEPER = "lease_sweeper"
DEADLINE_SWEEPER = "deadline_sweeper"
SCHEDULE_TO_START = Failure(
    "timeout",
    "not started before its schedule-to-start deadline",
    False,
    {"timeout_kind": TimeoutKind.SCHEDULE_TO_START.value},
)


def expiry_kind(row: Any, now_us: int) -> TimeoutKind:
    """Which clock ended a lease whose lease_expires_at has passed."""
    if row.start_to_close_us and row.leased_at + row.start_to_close_us <= now_us:
        return TimeoutKind.START_TO_CLOSE
    last_beat = row.heartbeat_at or row.leased_at
    if row.heartbeat_timeout_us and last_beat + row.heartbeat_timeout_us <= now_us:
        return TimeoutKind.HEARTBEAT
    return TimeoutKind.LEASE_EXPIRED


def _due(
    columns: Any, state: WorkOrderState, at: Any, now_us: int, limit: int, only: int | None
) -> Select[Any]:
    statement = select(*columns).where(wo.state == state.value, at <= now_us)
    if only is not None:
        statement = statement.where(wo.seq == only)
    return statement.order_by(at).limit(limit)


async def expire_leases(
    store: SqlWorkOrderStore, engine: AsyncEngine, now: datetime, limit: int
) -> list[WorkOrder]:
    now_us = to_micros(now)

    async def body(conn: AsyncConnection, only: int | None, poisoned: Poisoned) -> list[WorkOrder]:
        stmt = _due([wo.seq], WorkOrderState.LEASED, wo.lease_expires_at, now_us, limit, only)
        if store.postgres:
            stmt = stmt.with_for_update(skip_locked=True)
        seqs = list((await conn.execute(stmt)).scalars())
        changed = []
        for row, current in await decoded_orders(conn, seqs, poisoned, now_us):
            if row.state != WorkOrderState.LEASED.value:  # SQLite: no lock, re-check
                continue
            try:
                kind = expiry_kind(row, now_us)
                plan = lease_expiry_plan(kind, now)
                outcome = plan.outcome(current)
            except Exception as error:
                await quarantine(conn, row.seq, poisoned, error, now_us)
                continue
            changed.append(
                await store.end_attempt(
                    conn,
                    row,
                    outcome.state,
                    outcome.available_at,
                    outcome.reason,
                    now_us,
                    failure=plan.failure,
                    timeout_kind=kind,
                    actor="sweeper",
                )
            )
        return changed

    async def candidates(conn: AsyncConnection) -> list[int]:
        stmt = _due([wo.seq], WorkOrderState.LEASED, wo.lease_expires_at, now_us, limit, None)
        return list((await conn.execute(stmt)).scalars())

    return await isolated_pass(engine, Poisoned(LEASE_SWEEPER), body, candidates, now_us)


async def expire_deadlines(
    store: SqlWorkOrderStore, engine: AsyncEngine, now: datetime, limit: int
) -> list[WorkOrder]:
    now_us = to_micros(now)

    async def body(conn: AsyncConnection, only: int | None, poisoned: Poisoned) -> list[WorkOrder]:
        stmt = _due([wo.seq], WorkOrderState.QUEUED, wo.deadline_at, now_us, limit, only)
        if store.postgres:
            stmt = stmt.with_for_update(skip_locked=True)
        locked = list((await conn.execute(stmt)).scalars())
        seqs = [row.seq for row, _ in await decoded_orders(conn, locked, poisoned, now_us)]
        if not seqs:
            return []
        result = await conn.execute(
            update(work_orders)
            .where(wo.seq.in_(seqs), wo.state == WorkOrderState.QUEUED.value)
            .values(
                state=WorkOrderState.FAILED.value,
                completed_at=now_us,
                updated_at=now_us,
                timeout_kind=TimeoutKind.SCHEDULE_TO_START.value,
                failure=failure_to_json(SCHEDULE_TO_START),
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
                    failure=SCHEDULE_TO_START,
                    timeout_kind=TimeoutKind.SCHEDULE_TO_START,
                )
                for o in orders
            ],
        )
        return orders

    async def candidates(conn: AsyncConnection) -> list[int]:
        stmt = _due([wo.seq], WorkOrderState.QUEUED, wo.deadline_at, now_us, limit, None)
        return list((await conn.execute(stmt)).scalars())

    return await isolated_pass(engine, Poisoned(DEADLINE_SWEEPER), body, candidates, now_us)
