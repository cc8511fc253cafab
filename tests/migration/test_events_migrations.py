"""Event store: `upgrade head` on an empty database gives exactly the models' schema."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, select

from conveyor_core import db, migrations
from conveyor_core.settings import CoreSettings
from conveyor_events.migrations import MIGRATIONS
from conveyor_events.store.tables import journal_head, metadata


def _ours(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
    """Compare the service's own tables, not Alembic's version table."""
    return not (type_ == "table" and name == MIGRATIONS.version_table)


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'events.db'}"
    return request.getfixturevalue("empty_postgres_url")


@pytest.fixture
async def empty_postgres_url(make_postgres_database) -> str:  # type: ignore[no-untyped-def]
    return await make_postgres_database()


def test_revisions_form_one_line() -> None:
    script = ScriptDirectory.from_config(MIGRATIONS.config())
    assert len(script.get_heads()) == 1, "two revisions share a parent: make the chain linear"
    assert script.get_base() == "0001"


async def test_upgrade_head_matches_models_and_downgrade_empties(database_url: str) -> None:
    engine = db.create_engine(database_url, CoreSettings())
    head = ScriptDirectory.from_config(MIGRATIONS.config()).get_current_head()
    try:
        await migrations.upgrade(engine, MIGRATIONS)
        await migrations.upgrade(engine, MIGRATIONS)  # idempotent
        assert await migrations.current_revision(engine, MIGRATIONS) == head
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda sync: compare_metadata(
                    MigrationContext.configure(sync, opts={"include_object": _ours}), metadata
                )
            )
            assert diff == []
            seeded = (await conn.execute(select(journal_head))).all()
            assert [tuple(row) for row in seeded] == [(1, 0)]
            indexes = await conn.run_sync(
                lambda sync: {i["name"] for i in inspect(sync).get_indexes("events_events")}
            )
        assert {"ix_events_events_pending", "ix_events_events_reserved"} <= indexes

        await migrations.downgrade(engine, MIGRATIONS, "base")
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda sync: set(inspect(sync).get_table_names()))
        assert tables & set(metadata.tables) == set()
    finally:
        await engine.dispose()
