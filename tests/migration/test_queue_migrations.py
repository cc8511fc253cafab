"""Queue schema specifics the generic migration test cannot compare."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect

from conveyor_core import db, migrations
from conveyor_core.settings import CoreSettings
from conveyor_queue.migrations import MIGRATIONS


async def test_dequeue_index_orders_by_priority_then_seq(database_url: str) -> None:
    """An expression index (`priority DESC`): Alembic skips it, so it is checked here."""
    engine = db.create_engine(database_url, CoreSettings())
    try:
        await migrations.upgrade(engine, MIGRATIONS)
        async with engine.connect() as conn:
            indexes = await conn.run_sync(
                lambda sync: {i["name"]: i for i in inspect(sync).get_indexes("queue_work_orders")}
            )
    finally:
        await engine.dispose()
    dequeue = indexes["ix_queue_work_orders_dequeue"]
    assert dequeue["column_names"][:2] == ["namespace", "queue"]
    assert dequeue["column_names"][-1] == "seq"


async def test_a_schema_behind_the_code_is_refused_at_start(database_url: str) -> None:
    engine = db.create_engine(database_url, CoreSettings())
    try:
        await migrations.upgrade(engine, MIGRATIONS, "0001")
        with pytest.raises(migrations.SchemaNotCurrent, match="found: 0001"):
            await migrations.ensure_schema(engine, MIGRATIONS, apply=False)
        await migrations.ensure_schema(engine, MIGRATIONS, apply=True)
        await migrations.require_head(engine, MIGRATIONS)
    finally:
        await engine.dispose()
