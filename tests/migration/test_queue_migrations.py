"""`upgrade head` on an empty database gives exactly the models' schema; downgrade removes it."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from conveyor_core import db, migrations
from conveyor_core.settings import CoreSettings
from conveyor_queue.migrations import MIGRATIONS
from conveyor_queue.store.tables import metadata

# Alembic cannot compare expression indexes (`priority DESC`); checked by hand below.
EXPRESSION_INDEXES = {"ix_queue_work_orders_dequeue"}


def _ours(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
    """Compare the service's own tables, not Alembic's version table."""
    if type_ == "index" and name in EXPRESSION_INDEXES:
        return False
    return not (type_ == "table" and name == MIGRATIONS.version_table)


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'queue.db'}"
    return request.getfixturevalue("empty_postgres_url")


@pytest.fixture
async def empty_postgres_url(make_postgres_database) -> str:  # type: ignore[no-untyped-def]
    return await make_postgres_database()


@pytest.mark.filterwarnings(
    "ignore:autogenerate skipping metadata-specified expression-based index"
)
@pytest.mark.filterwarnings("ignore:Generating approximate signature for index")
async def test_upgrade_head_matches_models_and_downgrade_empties(database_url: str) -> None:
    engine = db.create_engine(database_url, CoreSettings())
    try:
        await migrations.upgrade(engine, MIGRATIONS)
        await migrations.upgrade(engine, MIGRATIONS)  # idempotent
        assert await migrations.current_revision(engine, MIGRATIONS) == "0002"
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda sync: compare_metadata(
                    MigrationContext.configure(sync, opts={"include_object": _ours}), metadata
                )
            )
        assert diff == []
        async with engine.connect() as conn:
            indexes = await conn.run_sync(
                lambda sync: {i["name"]: i for i in inspect(sync).get_indexes("queue_work_orders")}
            )
        dequeue = indexes["ix_queue_work_orders_dequeue"]
        assert dequeue["column_names"][:2] == ["namespace", "queue"]
        assert dequeue["column_names"][-1] == "seq"

        await migrations.downgrade(engine, MIGRATIONS, "base")
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda sync: set(inspect(sync).get_table_names()))
        assert tables & set(metadata.tables) == set()
    finally:
        await engine.dispose()
