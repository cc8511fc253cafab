"""The one grouped query behind the queue's gauges (conveyor_queue.metrics).

Counts per namespace, queue and live state (QUEUED, LEASED, and DEAD: the
dead letters awaiting a redrive) and the earliest `available_at` of QUEUED
orders, read through `ix_queue_work_orders_listing` (namespace, queue, state,
seq). Terminal states other than DEAD grow forever and are counters instead.
Configured queues with no live orders report zeros, so their series never
vanish.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from conveyor_core.clock import to_micros
from conveyor_core.gauges import Snapshot
from conveyor_queue.domain.model import WorkOrderState
from conveyor_queue.store.tables import queues, work_orders

wo = work_orders.c
#: The states a depth gauge reports; each label value of `state`.
GAUGED_STATES = (WorkOrderState.QUEUED, WorkOrderState.LEASED, WorkOrderState.DEAD)


async def queue_snapshot(engine: AsyncEngine, now: datetime, max_queues: int) -> Snapshot:
    """`depth` (labels namespace, queue, state), `in_flight` and `oldest_queued_age` (seconds)
    per queue, for at most `max_queues` queues (the most loaded first)."""
    grouped = (
        select(
            wo.namespace,
            wo.queue,
            wo.state,
            func.count().label("n"),
            func.min(wo.available_at).label("oldest"),
        )
        .where(wo.state.in_([s.value for s in GAUGED_STATES]))
        .group_by(wo.namespace, wo.queue, wo.state)
    )
    counts: dict[tuple[str, str], dict[str, int]] = {}
    oldest: dict[tuple[str, str], int] = {}
    async with engine.connect() as conn:
        for row in await conn.execute(grouped):
            key = (row.namespace, row.queue)
            counts.setdefault(key, {})[row.state] = int(row.n)
            if row.state == WorkOrderState.QUEUED.value and row.oldest is not None:
                oldest[key] = int(row.oldest)
        configured = await conn.execute(
            select(queues.c.namespace, queues.c.queue).limit(max_queues)
        )
        for row in configured:
            counts.setdefault((row.namespace, row.queue), {})
    ranked = sorted(counts, key=lambda key: -sum(counts[key].values()))[:max_queues]
    now_us = to_micros(now)
    depth, in_flight, ages = [], [], []
    for namespace, queue in ranked:
        by_state = counts[(namespace, queue)]
        labels = {"namespace": namespace, "queue": queue}
        for state in GAUGED_STATES:
            depth.append((labels | {"state": state.value.lower()}, float(by_state.get(state, 0))))
        in_flight.append((labels, float(by_state.get(WorkOrderState.LEASED.value, 0))))
        first = oldest.get((namespace, queue))
        age = max(0.0, (now_us - first) / 1e6) if first is not None else 0.0
        ages.append((labels, age))
    return {"depth": depth, "in_flight": in_flight, "oldest_queued_age": ages}
