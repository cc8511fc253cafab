"""One bad outbox row never stops the queue's journal relay: rows planted in the outbox (bypassing
every writer) that cannot be read, or that the journal refuses, are quarantined with their cause
and counted, and every other order's records still reach the journal.

Real parts: the queue and the journal on one Platform (SQLite + in-process, or PostgreSQL +
Redis), the relay delivering over gRPC.
"""

from __future__ import annotations

import logging
import uuid

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from sqlalchemy import insert, select, text

from conveyor_queue.store.tables import work_order_events
from tests.helpers import journal as fixtures
from tests.helpers.journal import QueueWithJournalEnv, eventually, read_journal
from tests.helpers.metrics import metric_value

queue_with_journal = fixtures.queue_with_journal
POISONED = "conveyor.queue.poisoned_items"
ev = work_order_events.c


def _row(**fields: object) -> dict[str, object]:
    row: dict[str, object] = {
        "work_order_id": uuid.uuid4(),
        "namespace": "test",
        "queue": "jobs",
        "from_state": None,
        "to_state": "QUEUED",
        "at": 1_900_000_000_000_000,
        "attempt": 0,
        "reason": "planted",
        "actor": "",
        "timeout_kind": None,
        "failure": None,
        "correlation_id": "",
        "traceparent": "",
    }
    row.update(fields)
    return row


async def _plant(env: QueueWithJournalEnv) -> list[int]:
    """Poisoned history rows: a namespace the journal refuses, a state no version knows, and
    (SQLite only, whose JSON column keeps any text) a failure that is not JSON."""
    engine = env.queue_service.engine_db
    rows = [_row(namespace="Not A Namespace"), _row(to_state="BOGUS")]
    sqlite = engine.dialect.name == "sqlite"
    if sqlite:
        rows.append(_row(reason="not json"))
    async with engine.begin() as conn:
        result = await conn.execute(insert(work_order_events).returning(ev.seq), rows)
        seqs = list(result.scalars())
        if sqlite:
            await conn.execute(
                text("UPDATE queue_work_order_events SET failure = 'not json' WHERE seq = :s"),
                {"s": seqs[-1]},
            )
    return seqs


async def _undelivered(env: QueueWithJournalEnv, seqs: list[int]) -> list[int]:
    async with env.queue_service.engine_db.connect() as conn:
        result = await conn.execute(
            select(ev.seq).where(ev.seq.in_(seqs), ev.journaled_at.is_(None))
        )
        return list(result.scalars())


async def test_poisoned_outbox_rows_are_quarantined_and_the_others_journaled(
    queue_with_journal: QueueWithJournalEnv,
    metric_reader: InMemoryMetricReader,
    caplog: pytest.LogCaptureFixture,
) -> None:
    env = queue_with_journal
    before = metric_value(metric_reader, POISONED, {"loop": "outbox"})
    with caplog.at_level(logging.ERROR, logger="conveyor_core.poison"):
        planted = await _plant(env)
        orders = [await env.submit() for _ in range(3)]
        for order in orders:
            await eventually(lambda order=order: _journaled(env, order.id))
        await eventually(lambda: _all_marked(env, planted))
    assert metric_value(metric_reader, POISONED, {"loop": "outbox"}) == before + len(planted)
    messages = [r.getMessage() for r in caplog.records]
    assert any("InvalidArgument" in m or "INVALID_ARGUMENT" in m for m in messages), messages
    assert any("BOGUS" in m for m in messages), messages
    journal = await read_journal(env.journal)
    assert not [r for r in journal if r.namespace == "Not A Namespace"]
    relay = env.queue_service.relay
    assert relay is not None and relay.stats.poisoned >= len(planted)


async def _journaled(env: QueueWithJournalEnv, order_id: str) -> bool:
    records = await read_journal(env.journal, subject=order_id)
    return any(r.type == "queue.work_order.queued" for r in records)


async def _all_marked(env: QueueWithJournalEnv, seqs: list[int]) -> bool:
    return await _undelivered(env, seqs) == []
