"""Per-service Alembic migrations, applied at start or by `conveyor migrate`.

Every service keeps its own linear revision chain under
`<service>/migrations/versions` and its own version table, so services can
share one database (the embedded default puts each in its own SQLite file).
Processes that start together on one database migrate one at a time, each in one
transaction: on PostgreSQL under an advisory lock, on SQLite under the database's
write lock taken first (`BEGIN IMMEDIATE`; without it Python's sqlite3 runs DDL outside
any transaction, so two processes both saw no schema and the second one's CREATE TABLE
failed with "table ... already exists").
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, MetaData, text
from sqlalchemy.ext.asyncio import AsyncEngine

from conveyor_core.db import SQLITE_BUSY_TIMEOUT_MS


@dataclass(frozen=True)
class MigrationSet:
    """Where a service's revisions live and which table records the applied one."""

    service: str
    script_location: Path
    metadata: MetaData

    @property
    def version_table(self) -> str:
        return f"alembic_version_{self.service}"

    def config(self) -> Config:
        cfg = Config()
        cfg.set_main_option("script_location", str(self.script_location))
        cfg.attributes["migration_set"] = self
        return cfg


async def upgrade(engine: AsyncEngine, migrations: MigrationSet, revision: str = "head") -> None:
    """Apply revisions up to `revision` in one transaction."""
    async with engine.begin() as conn:
        await conn.run_sync(_run, migrations, "upgrade", revision)


async def downgrade(engine: AsyncEngine, migrations: MigrationSet, revision: str) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(_run, migrations, "downgrade", revision)


async def current_revision(engine: AsyncEngine, migrations: MigrationSet) -> str | None:
    def _current(conn: Connection) -> str | None:
        script = ScriptDirectory.from_config(migrations.config())
        with EnvironmentContext(migrations.config(), script) as env:
            env.configure(connection=conn, version_table=migrations.version_table)
            return env.get_context().get_current_revision()

    async with engine.connect() as conn:
        return await conn.run_sync(_current)


class SchemaNotCurrent(RuntimeError):
    """The database schema is not at the revision this code needs."""


async def require_head(engine: AsyncEngine, migrations: MigrationSet) -> None:
    """Raise SchemaNotCurrent unless the service's schema is at its head revision."""
    head = ScriptDirectory.from_config(migrations.config()).get_current_head()
    current = await current_revision(engine, migrations)
    if current != head:
        raise SchemaNotCurrent(
            f"{migrations.service} schema is not migrated to {head} (found: {current or 'none'}); "
            f"run `conveyor migrate {migrations.service}`"
        )


async def ensure_schema(engine: AsyncEngine, migrations: MigrationSet, *, apply: bool) -> None:
    """At start-up, before any background work: migrate (if `apply`), then require head."""
    if apply:
        await upgrade(engine, migrations)
    await require_head(engine, migrations)


#: How long (ms) a process starting on SQLite waits for another one's migration.
SQLITE_MIGRATION_WAIT_MS = 120_000


def _run(conn: Connection, migrations: MigrationSet, verb: str, revision: str) -> None:
    if conn.dialect.name == "postgresql":
        key = zlib.crc32(migrations.version_table.encode())
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
    elif conn.dialect.name == "sqlite":
        # Take the write lock before reading the version table; the busy handler waits
        # for a migration in another process (the engine's usual 5 s may be too short).
        conn.exec_driver_sql(f"PRAGMA busy_timeout={SQLITE_MIGRATION_WAIT_MS}")
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    try:
        cfg = migrations.config()
        cfg.attributes["connection"] = conn
        getattr(command, verb)(cfg, revision)
    finally:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")


def run_env() -> None:
    """Body of every service's migrations/env.py (online mode on a given connection)."""
    from alembic import context

    cfg = context.config
    migrations: MigrationSet = cfg.attributes["migration_set"]
    context.configure(
        connection=cfg.attributes["connection"],
        target_metadata=migrations.metadata,
        version_table=migrations.version_table,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()
