"""Stores under test, one per backend, each on a fresh migrated database.

The conformance suites here drive a store through its Protocol only, with the
time handed in from a ManualClock, so the same tests hold for every backend:
PostgreSQL and SQLite (the `core` fixture of tests/conftest.py runs each test
on both). The gRPC integration tests keep their end-to-end role.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from conveyor_core import db, migrations
from conveyor_core.clock import ManualClock
from conveyor_core.coordination.inprocess import InProcessCoordination
from conveyor_core.settings import CoreSettings
from conveyor_executor.migrations import MIGRATIONS as EXECUTOR_MIGRATIONS
from conveyor_executor.store.base import RunStore
from conveyor_executor.store.outbox import SqlExecutorOutbox
from conveyor_executor.store.sql import SqlRunStore
from conveyor_queue.engine import CoordinationGate
from conveyor_queue.migrations import MIGRATIONS as QUEUE_MIGRATIONS
from conveyor_queue.store.base import TokenGate, WorkOrderStore
from conveyor_queue.store.sql import SqlWorkOrderStore


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2030, 1, 1, 12, 0, tzinfo=UTC))


@pytest.fixture
async def queue_store(core: CoreSettings) -> AsyncIterator[WorkOrderStore]:
    engine = db.create_engine(core.database_url_for("queue"), core)
    await migrations.ensure_schema(engine, QUEUE_MIGRATIONS, apply=True)
    # No cached queue settings: every read sees the last write (the cache has its own test).
    store = SqlWorkOrderStore(engine, config_cache_seconds=0.0)
    try:
        yield store
    finally:
        await store.close()
        await engine.dispose()


@pytest.fixture
async def executor_db(core: CoreSettings) -> AsyncIterator[AsyncEngine]:
    engine = db.create_engine(core.database_url_for("executor"), core)
    await migrations.ensure_schema(engine, EXECUTOR_MIGRATIONS, apply=True)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
def run_store(executor_db: AsyncEngine) -> RunStore:
    return SqlRunStore(executor_db)


@pytest.fixture
def executor_outbox(executor_db: AsyncEngine, clock: ManualClock) -> SqlExecutorOutbox:
    """Where the journal drafts of RunStore writes land (read to check they did)."""
    return SqlExecutorOutbox(executor_db, clock)


@pytest.fixture
async def gate(clock: ManualClock) -> AsyncIterator[TokenGate]:
    """Rate limits over the in-process coordination (the embedded default's), whose
    buckets refill on the manual clock."""
    coordination = InProcessCoordination(monotonic=lambda: clock.now().timestamp())
    await coordination.start()
    try:
        yield CoordinationGate(coordination)
    finally:
        await coordination.stop()
