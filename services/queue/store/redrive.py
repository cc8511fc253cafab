"""Redrive: DEAD orders back to QUEUED, in chunks, each order once per redrive.

A redrive is a row that records who asked, why, and how far it got (a seq
cursor). Each chunk is its own transaction that moves the cursor forward, so
an order that dies again during the same redrive is never picked twice, and a
redrive interrupted by a crash resumes where it stopped when the same
request_id is sent again.

A DEAD order whose row cannot be read is not redriven: it is quarantined
(FAILED, failure type `poisoned`, store/poison.py) and the redrive goes on.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from conveyor_core.clock import opt_to_micros, to_micros
from conveyor_queue.domain.model import Redrive, WorkOrderState
from conveyor_queue.store.base import RedriveParams
from conveyor_queue.store.history import event_row, insert_events
from conveyor_queue.store.poison import Poisoned, decoded_orders
from conveyor_queue.store.rows import order_from_row, redrive_from_row
from conveyor_queue.store.tables import redrives, work_orders

wo = work_orders.c
rd = redrives.c
#: The `loop` label of redrive in conveyor.queue.poisoned_items.
REDRIVE = "redrive"


async def run_redrive(engine: AsyncEngine, insert: Callable[..., Any], p: RedriveParams) -> Redrive:
    redrive_id = await _open(engine, insert, p)
    while True:
        async with engine.begin() as conn:
            finished, poisoned = await _chunk(conn, redrive_id, p)
        if poisoned is not None:
            poisoned.report()  # committed
        if finished:
            break
    async with engine.connect() as conn:
        row = (await conn.execute(select(redrives).where(rd.id == redrive_id))).one()
    return redrive_from_row(row._mapping)


async def _open(engine: AsyncEngine, insert: Callable[..., Any], p: RedriveParams) -> uuid.UUID:
    now_us = to_micros(p.now)
    row: dict[str, Any] = {
        "id": uuid.uuid4(),
        "namespace": p.queue.namespace,
        "queue": p.queue.queue,
        "request_id": p.request_id or None,
        "requested_by": p.requested_by,
        "reason": p.reason,
        "error_type": p.error_type,
        "dead_after": opt_to_micros(p.dead_after),
        "max_work_orders": p.max_work_orders,
        "redriven_count": 0,
        "cursor_seq": 0,
        "done": False,
        "created_at": now_us,
        "updated_at": now_us,
    }
    async with engine.begin() as conn:
        await conn.execute(insert(redrives).on_conflict_do_nothing(), [row])
        if not p.request_id:
            created: uuid.UUID = row["id"]
            return created
        existing: uuid.UUID = (
            await conn.execute(
                select(rd.id).where(
                    rd.namespace == p.queue.namespace,
                    rd.queue == p.queue.queue,
                    rd.request_id == p.request_id,
                )
            )
        ).scalar_one()
        return existing


async def _chunk(
    conn: AsyncConnection, redrive_id: uuid.UUID, p: RedriveParams
) -> tuple[bool, Poisoned | None]:
    """Redrive one chunk; True when the redrive is complete, and the orders it quarantined."""
    stmt = select(redrives).where(rd.id == redrive_id)
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    redrive = (await conn.execute(stmt)).one()
    if redrive.done:
        return True, None
    size = p.chunk_size
    if redrive.max_work_orders:
        size = min(size, redrive.max_work_orders - redrive.redriven_count)
    conditions = [
        wo.namespace == redrive.namespace,
        wo.queue == redrive.queue,
        wo.state == WorkOrderState.DEAD.value,
        wo.seq > redrive.cursor_seq,
    ]
    if redrive.error_type:
        conditions.append(wo.failure["type"].as_string() == redrive.error_type)
    if redrive.dead_after is not None:
        conditions.append(wo.completed_at >= redrive.dead_after)
    picked = select(wo.seq).where(*conditions).order_by(wo.seq).limit(max(size, 0))
    if conn.dialect.name == "postgresql":
        picked = picked.with_for_update()
    seqs = list((await conn.execute(picked)).scalars()) if size > 0 else []
    now_us = to_micros(p.now)
    poisoned = Poisoned(REDRIVE)
    # An order that cannot be read is not redriven but quarantined (DEAD -> FAILED, poisoned).
    readable = await decoded_orders(conn, seqs, poisoned, now_us, [WorkOrderState.DEAD])
    if readable:
        result = await conn.execute(
            update(work_orders)
            .where(
                wo.seq.in_([row.seq for row, _ in readable]),
                wo.state == WorkOrderState.DEAD.value,
            )
            .values(
                state=WorkOrderState.QUEUED.value,
                attempt=0,
                available_at=now_us,
                completed_at=None,
                cancel_requested=False,
                updated_at=now_us,
                redrive_count=wo.redrive_count + 1,
                last_redrive_id=redrive_id,
            )
            .returning(*work_orders.columns)
        )
        orders = [order_from_row(r._mapping) for r in result]
        await insert_events(
            conn,
            [
                event_row(
                    o,
                    WorkOrderState.DEAD,
                    f"redriven: {redrive.reason}",
                    actor=redrive.requested_by,
                    at_us=now_us,
                )
                for o in orders
            ],
        )
    total = redrive.redriven_count + len(readable)
    finished = (
        size <= 0
        or len(seqs) < size
        or (bool(redrive.max_work_orders) and total >= redrive.max_work_orders)
    )
    await conn.execute(
        update(redrives)
        .where(rd.id == redrive_id)
        .values(
            redriven_count=total,
            cursor_seq=seqs[-1] if seqs else redrive.cursor_seq,
            done=finished,
            updated_at=now_us,
        )
    )
    return finished, poisoned
