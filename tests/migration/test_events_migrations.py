"""Event-store schema specifics beyond the generic migration test."""

from __future__ import annotations

from sqlalchemy import select

from conveyor_core import db, migrations
from conveyor_core.settings import CoreSettings
from conveyor_events.migrations import MIGRATIONS
from conveyor_events.store.tables import journal_head


async def test_journal_head_is_seeded(database_url: str) -> None:
    """Positions are allocated by updating this one row, so it must exist from the start."""
    engine = db.create_engine(database_url, CoreSettings())
    try:
        await migrations.upgrade(engine, MIGRATIONS)
        async with engine.connect() as conn:
            seeded = (await conn.execute(select(journal_head))).all()
    finally:
        await engine.dispose()
    assert [tuple(row) for row in seeded] == [(1, 0)]
