"""A start batch that fails after part of it committed (PostgreSQL only: there the new
runs' starts are one autocommit statement, the later attempts of known runs a
transaction after it). `BatchPartlyWritten` names what is durable, and the recorder's
one-by-one retry skips it, so no start, attempt or journal record is written twice.

The failure is real: another transaction holds the known run's row lock and the
store's engine has a short statement timeout, so the transaction's UPDATE of that run
is cancelled by PostgreSQL after the new run's statement has committed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from conveyor_core import db
from conveyor_core.clock import ManualClock
from conveyor_core.settings import CoreSettings
from conveyor_executor.domain.model import AttemptEnd, RunRef, RunState
from conveyor_executor.recording import RunRecorder
from conveyor_executor.store.base import AttemptFinish, BatchPartlyWritten
from conveyor_executor.store.sql import SqlRunStore
from conveyor_executor.watch import WatchHub
from tests.store.test_run_store_batches import namespace, start

#: The store's statement timeout here: long enough for a statement on a loaded machine,
#: short enough that a statement waiting for the held lock is cancelled quickly.
STATEMENT_TIMEOUT_SECONDS = 2.0


@pytest.fixture
async def short_timeout_store(
    executor_db: AsyncEngine, store_core: CoreSettings
) -> AsyncIterator[SqlRunStore]:
    if executor_db.dialect.name != "postgresql":
        pytest.skip("SQLite writes a start batch in one transaction: no partial failure")
    core = store_core.model_copy(update={"db_statement_timeout_seconds": STATEMENT_TIMEOUT_SECONDS})
    engine = db.create_engine(core.database_url_for("executor"), core)
    yield SqlRunStore(engine)
    await engine.dispose()


async def _lock_run(conn: AsyncConnection, ns: str, run_id: str) -> None:
    await conn.execute(
        text("SELECT 1 FROM executor_runs WHERE namespace = :ns AND run_id = :id FOR UPDATE"),
        {"ns": ns, "id": run_id},
    )


async def _journal_rows(engine: AsyncEngine, ns: str) -> dict[str, int]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT subjects ->> 'run' AS run, count(*) AS n FROM executor_journal_outbox "
                "WHERE namespace = :ns GROUP BY 1"
            ),
            {"ns": ns},
        )
        return {row.run: row.n for row in rows}


async def _known_run_awaiting_attempt_2(
    store: SqlRunStore, run: RunRef, clock: ManualClock
) -> None:
    """`run` known to the store: attempt 1 started and failed, the run PENDING its retry."""
    await store.run_start_attempts([start(run, 1, clock)])
    failed = AttemptEnd(RunState.FAILED, RunState.PENDING, clock.now())
    await store.run_finish_attempts([AttemptFinish(run, 1, failed)])


async def test_the_store_names_the_starts_it_committed_before_the_failure(
    short_timeout_store: SqlRunStore, executor_db: AsyncEngine, clock: ManualClock
) -> None:
    ns = namespace()
    new, known = (f"{ns}-{name}" for name in ("new", "known"))
    store = short_timeout_store
    await _known_run_awaiting_attempt_2(store, RunRef(ns, known), clock)
    batch = [start(RunRef(ns, new), 1, clock), start(RunRef(ns, known), 2, clock)]

    async with executor_db.connect() as holder:
        await holder.begin()
        await _lock_run(holder, ns, known)
        with pytest.raises(BatchPartlyWritten) as raised:
            await store.run_start_attempts(batch)
        await holder.rollback()

    assert raised.value.written == frozenset({0})
    new_run = await store.run_get(batch[0].ref)
    assert new_run.state is RunState.RUNNING and [a.number for a in new_run.attempts] == [1]
    known_run = await store.run_get(batch[1].ref)
    assert [a.number for a in known_run.attempts] == [1]  # attempt 2 not written
    assert await _journal_rows(executor_db, ns) == {new: 1, known: 1}


async def test_the_recorder_retries_only_what_was_not_written(
    short_timeout_store: SqlRunStore,
    executor_db: AsyncEngine,
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ns = namespace()
    new, known = (f"{ns}-{name}" for name in ("new", "known"))
    store = short_timeout_store
    await _known_run_awaiting_attempt_2(store, RunRef(ns, known), clock)
    recorder = RunRecorder(store, WatchHub(16), lambda: None, max_error_message=1000)
    batch = [start(RunRef(ns, new), 1, clock), start(RunRef(ns, known), 2, clock)]

    async with executor_db.connect() as holder:
        await holder.begin()
        await _lock_run(holder, ns, known)
        with caplog.at_level(logging.WARNING, logger="conveyor_executor.recording"):
            # One batch: both starts are queued before the group commit's next turn.
            results = await asyncio.gather(*(recorder.start_attempt(p) for p in batch))
        await holder.rollback()

    assert results == [True, False]  # the new run's start stands; the locked run's did not
    assert "batch not written, one by one" in caplog.text  # the partial path was taken
    new_run = await store.run_get(batch[0].ref)
    assert [a.number for a in new_run.attempts] == [1]
    known_run = await store.run_get(batch[1].ref)
    assert [a.number for a in known_run.attempts] == [1]
    # The new run's start and its journal record exist once: the retry skipped them.
    assert await _journal_rows(executor_db, ns) == {new: 1, known: 1}
