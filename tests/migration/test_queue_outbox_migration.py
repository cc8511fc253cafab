"""Queue migration 0002: existing history becomes undelivered outbox rows; 0002 downgrades."""

from __future__ import annotations

import uuid

from sqlalchemy import inspect, text

from conveyor_core import db, migrations
from conveyor_core.settings import CoreSettings
from conveyor_queue.migrations import MIGRATIONS

INSERT_EVENT = text(
    "INSERT INTO queue_work_order_events (work_order_id, namespace, queue, to_state, at, "
    "attempt, reason, actor, correlation_id, traceparent) "
    "VALUES (:id, 'test', 'jobs', 'QUEUED', 1, 0, 'submitted', '', 'c', '')"
)


async def test_history_from_before_0002_is_undelivered_and_0002_downgrades(
    database_url: str,
) -> None:
    engine = db.create_engine(database_url, CoreSettings())
    try:
        await migrations.upgrade(engine, MIGRATIONS, "0001")
        order_id = uuid.uuid4().hex if database_url.startswith("sqlite") else uuid.uuid4()
        async with engine.begin() as conn:
            await conn.execute(INSERT_EVENT, {"id": order_id})
        await migrations.upgrade(engine, MIGRATIONS, "0002")
        async with engine.connect() as conn:
            undelivered = await conn.execute(
                text("SELECT count(*) FROM queue_work_order_events WHERE journaled_at IS NULL")
            )
            assert undelivered.scalar_one() == 1
            indexes = await conn.run_sync(
                lambda sync: {
                    i["name"] for i in inspect(sync).get_indexes("queue_work_order_events")
                }
            )
        assert "ix_queue_work_order_events_undelivered" in indexes

        await migrations.downgrade(engine, MIGRATIONS, "0001")
        async with engine.connect() as conn:
            columns = await conn.run_sync(
                lambda sync: {
                    c["name"] for c in inspect(sync).get_columns("queue_work_order_events")
                }
            )
            count = await conn.execute(text("SELECT count(*) FROM queue_work_order_events"))
            assert count.scalar_one() == 1
        assert "journaled_at" not in columns
    finally:
        await engine.dispose()
