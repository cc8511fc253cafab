"""Per-service Alembic migrations, applied at start or by `conveyor migrate`.

Every service keeps its own linear revision chain under
`<service>/migrations/versions` and its own version table, so services can
share one database (the embedded default puts each in its own SQLite file).
On PostgreSQL an advisory lock serialises replicas that start together.
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


def _run(conn: Connection, migrations: MigrationSet, verb: str, revision: str) -> None:
    if conn.dialect.name == "postgresql":
        key = zlib.crc32(migrations.version_table.encode())
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
    cfg = migrations.config()
    cfg.attributes["connection"] = conn
    getattr(command, verb)(cfg, revision)


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
