"""Delivered journal outbox rows are deleted once past the purge age (TableOutbox, the
executor's and the scheduler's outboxes), on every backend, with the manual clock; the
relay's purge runs on its own interval; the queue's outbox keeps its rows (they are the
orders' history)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from conveyor_core.clock import ManualClock
from conveyor_core.coordination import InProcessCoordination
from conveyor_core.outbox import OutboxRecord, OutboxRelay, PurgeSettings
from conveyor_executor.store.base import JournalDraft, RunStore
from conveyor_executor.store.outbox import SqlExecutorOutbox
from conveyor_executor.store.tables import journal_outbox
from tests.helpers.polling import eventually

NS = "conformance"  # rebound per test (conftest's namespace fixture)
HOUR = 3600.0


class UnusedSink:
    async def append(self, records: Sequence[OutboxRecord]) -> None:
        raise AssertionError("nothing is undelivered: the relay has nothing to append")


async def _write(run_store: RunStore, clock: ManualClock, count: int) -> None:
    drafts = [JournalDraft("run.started", NS, clock.now(), {"run": str(i)}) for i in range(count)]
    await run_store.journal_append(drafts)


async def _deliver(outbox: SqlExecutorOutbox, count: int) -> None:
    async with outbox.claim(count) as batch:
        assert batch.claimed == count
        await batch.mark_delivered()


async def _rows(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        statement = select(func.count()).select_from(journal_outbox)
        return int((await conn.execute(statement.where(journal_outbox.c.namespace == NS))).scalar())


async def test_only_rows_delivered_longer_ago_than_the_age_are_deleted(
    run_store: RunStore,
    executor_outbox: SqlExecutorOutbox,
    executor_db: AsyncEngine,
    clock: ManualClock,
) -> None:
    await _purge_everything_before(executor_outbox, clock)  # rows of other tests in the module
    await _write(run_store, clock, 3)
    await _deliver(executor_outbox, 2)
    clock.advance(HOUR - 1)
    assert await executor_outbox.purge_delivered(HOUR, 100) == 0  # not old enough yet
    await _write(run_store, clock, 1)
    await _deliver(executor_outbox, 2)  # the third row of the first write, and the new one
    clock.advance(2)
    assert await executor_outbox.purge_delivered(HOUR, 100) == 2  # the first two only
    assert await _rows(executor_db) == 2
    clock.advance(HOUR)
    assert await executor_outbox.purge_delivered(HOUR, 100) == 2
    assert await _rows(executor_db) == 0


async def test_undelivered_rows_are_never_deleted(
    run_store: RunStore,
    executor_outbox: SqlExecutorOutbox,
    executor_db: AsyncEngine,
    clock: ManualClock,
) -> None:
    await _purge_everything_before(executor_outbox, clock)
    await _write(run_store, clock, 2)
    clock.advance(10 * HOUR)
    assert await executor_outbox.purge_delivered(HOUR, 100) == 0
    assert await executor_outbox.undelivered_count() >= 2
    assert await _rows(executor_db) == 2


async def test_a_purge_pass_deletes_batch_by_batch_until_none_is_left(
    run_store: RunStore,
    executor_outbox: SqlExecutorOutbox,
    executor_db: AsyncEngine,
    clock: ManualClock,
) -> None:
    await _delivered_an_hour_ago(run_store, executor_outbox, clock, 7)
    assert await executor_outbox.purge_delivered(HOUR, 3) == 3  # one statement: the limit
    relay = _purging_relay(executor_outbox, PurgeSettings(after_seconds=HOUR, batch=3))
    assert await relay.purge_once() == 4  # 3, then 1: done
    assert relay.stats.purged == 4
    assert await _rows(executor_db) == 0


async def test_a_running_relay_purges_on_its_interval(
    run_store: RunStore,
    executor_outbox: SqlExecutorOutbox,
    executor_db: AsyncEngine,
    clock: ManualClock,
) -> None:
    await _delivered_an_hour_ago(run_store, executor_outbox, clock, 2)
    relay = _purging_relay(
        executor_outbox, PurgeSettings(after_seconds=HOUR, interval_seconds=0.05, batch=100)
    )
    await relay.start()
    try:
        await eventually(lambda: relay.stats.purged >= 2, "the relay's purge ran", 30)
    finally:
        await relay.stop()
    assert await _rows(executor_db) == 0


async def test_a_relay_with_purging_off_starts_no_purge(
    executor_outbox: SqlExecutorOutbox,
) -> None:
    relay = OutboxRelay(executor_outbox, UnusedSink(), InProcessCoordination())  # age 0: off
    await relay.start()
    try:
        assert relay._purging is None
    finally:
        await relay.stop()


async def _delivered_an_hour_ago(
    run_store: RunStore, outbox: SqlExecutorOutbox, clock: ManualClock, count: int
) -> None:
    """`count` rows of this test only, delivered over an hour ago by the clock."""
    await _purge_everything_before(outbox, clock)
    await _write(run_store, clock, count)
    await _deliver(outbox, count)
    clock.advance(HOUR + 1)


def _purging_relay(outbox: SqlExecutorOutbox, purge: PurgeSettings) -> OutboxRelay:
    return OutboxRelay(outbox, UnusedSink(), InProcessCoordination(), purge=purge)


async def _purge_everything_before(outbox: SqlExecutorOutbox, clock: ManualClock) -> None:
    """Deliver and delete what earlier tests of the module left, then count from zero."""
    while await outbox.undelivered_count():
        async with outbox.claim(1000) as batch:
            await batch.mark_delivered()
    while await outbox.purge_delivered(-1.0, 1000):  # delivered at any time up to now
        pass
