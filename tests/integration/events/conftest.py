"""The event store under test runs on both storage backends:

- `sqlite`: the embedded default (SQLite file, in-process coordination);
- `postgres`: PostgreSQL + Redis, as in production.
Each test gets its own database (a clone of a migrated template) and Redis prefix.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from conveyor_core import db, migrations
from conveyor_core.settings import CoreSettings
from conveyor_events.migrations import MIGRATIONS
from tests.helpers.events import EventsEnv

BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(scope="session")
async def events_template_db(make_postgres_database) -> str:  # type: ignore[no-untyped-def]
    """A database migrated once; each test clones it (CREATE DATABASE ... TEMPLATE)."""
    url = await make_postgres_database()
    engine = db.create_engine(url, CoreSettings())
    await migrations.upgrade(engine, MIGRATIONS)
    await engine.dispose()
    return make_url(url).database or ""


@pytest.fixture
async def postgres_core(
    make_postgres_database,
    events_template_db: str,
    redis_url: str,
    redis_prefix: str,
    tmp_path: Path,
) -> CoreSettings:  # type: ignore[no-untyped-def]
    url = await make_postgres_database(template=events_template_db)
    return CoreSettings(
        database_url=url, redis_url=redis_url, redis_key_prefix=redis_prefix, data_dir=tmp_path
    )


@pytest.fixture(params=BACKENDS)
def core(request: pytest.FixtureRequest, tmp_path: Path) -> CoreSettings:
    if request.param == "sqlite":
        return CoreSettings(data_dir=tmp_path)
    return request.getfixturevalue("postgres_core")


@pytest.fixture
async def env(core: CoreSettings) -> AsyncIterator[EventsEnv]:
    events_env = await EventsEnv(core).start()
    yield events_env
    await events_env.stop()


@pytest.fixture
async def topic(env: EventsEnv) -> str:
    """The topic "orders", created."""
    await env.create_topic("orders")
    return "orders"
