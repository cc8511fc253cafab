"""Every service's migrations: one linear chain; `upgrade head` on an empty database gives
exactly the models' schema (and is idempotent); `downgrade base` removes it again."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Column, inspect

from conveyor_core import db, migrations
from conveyor_core.migrations import MigrationSet
from conveyor_core.settings import CoreSettings
from tests.conftest import all_migration_sets

SETS = {m.service: m for m in all_migration_sets()}
ROOT = Path(__file__).resolve().parents[2]


def _expression_indexes(migration_set: MigrationSet) -> set[str]:
    """Indexes on expressions (`priority DESC`), which Alembic cannot compare."""
    return {
        str(index.name)
        for table in migration_set.metadata.tables.values()
        for index in table.indexes
        if any(not isinstance(e, Column) for e in index.expressions)
    }


def _compared(migration_set: MigrationSet) -> Any:
    skip_indexes = _expression_indexes(migration_set)

    def include(obj: object, name: str | None, type_: str, reflected: bool, other: object) -> bool:
        if type_ == "index" and name in skip_indexes:
            return False
        return not (type_ == "table" and name == migration_set.version_table)

    return include


@pytest.mark.parametrize("service", sorted(SETS))
def test_revisions_form_one_line(service: str) -> None:
    script = ScriptDirectory.from_config(SETS[service].config())
    assert len(script.get_heads()) == 1, "two revisions share a parent: make the chain linear"


@pytest.mark.filterwarnings("ignore:autogenerate skipping metadata-specified expression-based")
@pytest.mark.filterwarnings("ignore:Generating approximate signature for index")
@pytest.mark.parametrize("service", sorted(SETS))
async def test_upgrade_head_matches_models_and_downgrade_empties(
    service: str, database_url: str
) -> None:
    migration_set = SETS[service]
    engine = db.create_engine(database_url, CoreSettings())
    head = ScriptDirectory.from_config(migration_set.config()).get_current_head()
    try:
        await migrations.upgrade(engine, migration_set)
        await migrations.upgrade(engine, migration_set)  # idempotent
        assert await migrations.current_revision(engine, migration_set) == head
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda sync: compare_metadata(
                    MigrationContext.configure(
                        sync, opts={"include_object": _compared(migration_set)}
                    ),
                    migration_set.metadata,
                )
            )
        assert diff == []

        await migrations.downgrade(engine, migration_set, "base")
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda sync: set(inspect(sync).get_table_names()))
        assert tables & set(migration_set.metadata.tables) == set()
    finally:
        await engine.dispose()


_MIGRATE_ALL = """
import asyncio, sys
from conveyor_core import db, migrations
from conveyor_core.settings import CoreSettings
from conveyor_executor.migrations import MIGRATIONS

async def main() -> None:
    engine = db.create_engine(sys.argv[1], CoreSettings())
    await migrations.ensure_schema(engine, MIGRATIONS, apply=True)
    await engine.dispose()

asyncio.run(main())
"""


async def test_processes_starting_together_on_one_database_each_find_the_schema_migrated(
    database_url: str,
) -> None:
    """Replicas (or two `conveyor worker`s on the embedded default) starting at once: one
    migrates, the others wait for it and find the head; none fails half-way."""
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _MIGRATE_ALL,
            database_url,
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        for _ in range(3)
    ]
    outputs = [(await p.communicate())[0].decode() for p in processes]
    assert [p.returncode for p in processes] == [0] * 3, "\n".join(o[-3000:] for o in outputs)
    engine = db.create_engine(database_url, CoreSettings())
    try:
        await migrations.require_head(engine, SETS["executor"])
    finally:
        await engine.dispose()
