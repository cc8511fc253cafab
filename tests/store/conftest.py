"""Stores under test, one per backend, each on a migrated database of its own.

The conformance suites here drive a store through its Protocol only, with the
time handed in from a ManualClock, so the same tests hold for every backend:
PostgreSQL and SQLite (every test runs on both). The gRPC integration tests keep
their end-to-end role.

One database per module and backend, not per test: creating and dropping a
PostgreSQL database costs seconds on a loaded machine. Each test works in a
namespace of its own (`NS`, rebound per test by the autouse `namespace` fixture
below), and a store method that spans namespaces (the sweepers, the
outbox count) is asserted on this test's part of the answer.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from conveyor_core import db, migrations
from conveyor_core.clock import ManualClock
from conveyor_core.coordination.inprocess import InProcessCoordination
from conveyor_core.migrations import MigrationSet
from conveyor_core.settings import CoreSettings
from conveyor_events.migrations import MIGRATIONS as EVENTS_MIGRATIONS
from conveyor_events.store.base import EventStore
from conveyor_events.store.journal_base import JournalStore
from conveyor_events.store.journal_sql import SqlJournalStore
from conveyor_events.store.sql import SqlEventStore
from conveyor_executor.migrations import MIGRATIONS as EXECUTOR_MIGRATIONS
from conveyor_executor.store.base import RunStore
from conveyor_executor.store.outbox import SqlExecutorOutbox
from conveyor_executor.store.sql import SqlRunStore
from conveyor_executor.store.workflow_base import WorkflowStore
from conveyor_executor.store.workflow_sql import SqlWorkflowStore
from conveyor_queue.engine import CoordinationGate
from conveyor_queue.migrations import MIGRATIONS as QUEUE_MIGRATIONS
from conveyor_queue.store.base import TokenGate, WorkOrderStore
from conveyor_queue.store.sql import SqlWorkOrderStore
from conveyor_scheduler.migrations import MIGRATIONS as SCHEDULER_MIGRATIONS
from conveyor_scheduler.store.base import SchedulerStore
from conveyor_scheduler.store.outbox import SqlJournalOutbox
from conveyor_scheduler.store.sql import SqlSchedulerStore


@pytest.fixture(scope="module")
async def module_postgres_url(
    make_postgres_database: Callable[..., Awaitable[str]], platform_template_db: str
) -> str:
    """A database of this module's own, cloned from the migrated template."""
    return await make_postgres_database(template=platform_template_db)


@pytest.fixture(
    scope="module",
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
def store_core(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> CoreSettings:
    """The settings of this module's databases on one backend."""
    data_dir = tmp_path_factory.mktemp("stores")
    if request.param == "sqlite":
        return CoreSettings(data_dir=data_dir)
    url: str = request.getfixturevalue("module_postgres_url")
    return CoreSettings(database_url=url, data_dir=data_dir)


async def _migrated(core: CoreSettings, service: str, schema: MigrationSet) -> AsyncEngine:
    engine = db.create_engine(core.database_url_for(service), core)
    await migrations.ensure_schema(engine, schema, apply=True)
    return engine


@pytest.fixture(autouse=True)
def namespace(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """This test's namespace, bound to its module's `NS` while the test runs (a module
    shares one database); a module whose names are built on it (a topic, a queue) defines
    `names_in(ns) -> {name: value}` and they are bound too."""
    ns = f"c{uuid.uuid4().hex[:12]}"
    module = request.module
    monkeypatch.setattr(module, "NS", ns, raising=False)
    names_in = getattr(module, "names_in", None)
    for name, value in (names_in(ns) if names_in else {}).items():
        monkeypatch.setattr(module, name, value)
    return ns


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2030, 1, 1, 12, 0, tzinfo=UTC))


# -- queue --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def queue_db(store_core: CoreSettings) -> AsyncIterator[AsyncEngine]:
    engine = await _migrated(store_core, "queue", QUEUE_MIGRATIONS)
    yield engine
    await engine.dispose()


@pytest.fixture
async def queue_store(queue_db: AsyncEngine) -> AsyncIterator[WorkOrderStore]:
    # No cached queue settings: every read sees the last write (the cache has its own test).
    store = SqlWorkOrderStore(queue_db, config_cache_seconds=0.0)
    yield store
    await store.close()


@pytest.fixture
async def gate(clock: ManualClock) -> AsyncIterator[TokenGate]:
    """Rate limits over the in-process coordination (the embedded default's), whose
    buckets refill on the manual clock."""
    coordination = InProcessCoordination(monotonic=lambda: clock.now().timestamp())
    await coordination.start()
    yield CoordinationGate(coordination)
    await coordination.stop()


# -- executor -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def executor_db(store_core: CoreSettings) -> AsyncIterator[AsyncEngine]:
    engine = await _migrated(store_core, "executor", EXECUTOR_MIGRATIONS)
    yield engine
    await engine.dispose()


@pytest.fixture
def run_store(executor_db: AsyncEngine) -> RunStore:
    return SqlRunStore(executor_db)


@pytest.fixture
def workflow_store(executor_db: AsyncEngine) -> WorkflowStore:
    return SqlWorkflowStore(executor_db)


@pytest.fixture
def executor_outbox(executor_db: AsyncEngine, clock: ManualClock) -> SqlExecutorOutbox:
    """Where the journal drafts of RunStore and WorkflowStore writes land (read to check
    they did)."""
    return SqlExecutorOutbox(executor_db, clock)


# -- events -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def events_db(store_core: CoreSettings) -> AsyncIterator[AsyncEngine]:
    engine = await _migrated(store_core, "events", EVENTS_MIGRATIONS)
    yield engine
    await engine.dispose()


@pytest.fixture
def event_store(events_db: AsyncEngine) -> EventStore:
    return SqlEventStore(events_db)


@pytest.fixture
def journal_store(events_db: AsyncEngine) -> JournalStore:
    """The journal, on the event store's database (as service.py wires it)."""
    return SqlJournalStore(events_db)


# -- scheduler ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def scheduler_db(store_core: CoreSettings) -> AsyncIterator[AsyncEngine]:
    engine = await _migrated(store_core, "scheduler", SCHEDULER_MIGRATIONS)
    yield engine
    await engine.dispose()


@pytest.fixture
def scheduler_store(scheduler_db: AsyncEngine) -> SchedulerStore:
    # As SchedulerService builds it: the engine alone (its settings are the engine's).
    return SqlSchedulerStore(scheduler_db)


@pytest.fixture
def scheduler_journal(scheduler_db: AsyncEngine, clock: ManualClock) -> SqlJournalOutbox:
    """Where the journal records of SchedulerStore writes land (read to check they did)."""
    return SqlJournalOutbox(scheduler_db, clock)
