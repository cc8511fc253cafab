"""The grouped queries behind the event store's gauges (conveyor_events.metrics).

Per namespace and topic: PENDING and RESERVED counts (the status index's
(namespace, topic, status) prefix) and pending events older than the stale
age (`CONVEYOR_EVENTS_STALE_AFTER_SECONDS`); and the journal's head position
(one row), from which the subscriber lag is measured.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from conveyor_core.clock import to_micros
from conveyor_core.gauges import Snapshot
from conveyor_events.domain.model import EventStatus
from conveyor_events.store.tables import events, journal_head

ev = events.c
_LIVE = (EventStatus.PENDING.value, EventStatus.RESERVED.value)


async def events_snapshot(engine: AsyncEngine, stale_before: datetime, max_topics: int) -> Snapshot:
    """`events` (labels namespace, topic, status), `stale` (namespace, topic) and
    `journal_head` (no labels), for at most `max_topics` topics (the fullest first)."""
    counts: dict[tuple[str, str], dict[str, int]] = {}
    stale: dict[tuple[str, str], int] = {}
    async with engine.connect() as conn:
        grouped = select(ev.namespace, ev.topic, ev.status, func.count().label("n"))
        for row in await conn.execute(
            grouped.where(ev.status.in_(_LIVE)).group_by(ev.namespace, ev.topic, ev.status)
        ):
            counts.setdefault((row.namespace, row.topic), {})[row.status] = int(row.n)
        old = (
            select(ev.namespace, ev.topic, func.count().label("n"))
            .where(
                ev.status == EventStatus.PENDING.value,
                ev.published_at < to_micros(stale_before),
            )
            .group_by(ev.namespace, ev.topic)
        )
        for row in await conn.execute(old):
            stale[(row.namespace, row.topic)] = int(row.n)
        head = (await conn.execute(select(func.max(journal_head.c.last_position)))).scalar()
    ranked = sorted(counts, key=lambda key: -sum(counts[key].values()))[:max_topics]
    by_status, stale_rows = [], []
    for namespace, topic in ranked:
        labels = {"namespace": namespace, "topic": topic}
        for status in _LIVE:
            value = float(counts[(namespace, topic)].get(status, 0))
            by_status.append((labels | {"status": status.lower()}, value))
        stale_rows.append((labels, float(stale.get((namespace, topic), 0))))
    return {"events": by_status, "stale": stale_rows, "journal_head": [({}, float(head or 0))]}
