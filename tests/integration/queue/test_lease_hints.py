"""Answers a long-poll keeps between lease calls (hints.py) are dropped when they may be wrong.

Real store and coordination of a running queue (both backends); orders written
straight into the store, without the engine, stand for a change nobody announced.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from google.protobuf import field_mask_pb2, timestamp_pb2

from conveyor.queue.v1 import messages_pb2 as m
from conveyor.queue.v1 import service_pb2 as rpc
from conveyor_core.settings import CoreSettings
from conveyor_queue.domain.model import QueueRef, WorkOrderSpec
from conveyor_queue.hints import DrainedQueues, DueTimes
from conveyor_queue.store.base import NewWorkOrder
from tests.helpers.polling import eventually
from tests.helpers.queue import NAMESPACE, QueueEnv, queue_name, spec, wall_clock


def _at(env: QueueEnv, seconds: float) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(env.clock.now() + timedelta(seconds=seconds))
    return out


async def _unannounced_delayed_order(env: QueueEnv, seconds: float) -> None:
    spec = WorkOrderSpec(not_before=env.clock.now() + timedelta(seconds=seconds))
    order = NewWorkOrder(uuid.uuid4(), QueueRef(NAMESPACE, "jobs"), spec, "", "")
    await env.engine.store.work_order_insert_many([order], env.clock.now())


async def test_answer_is_kept_until_a_delayed_order_is_announced(env: QueueEnv) -> None:
    store = env.engine.store
    due = DueTimes(store.work_order_next_available, env.platform.coordination, ttl=300)
    try:
        assert await due.next_due(NAMESPACE, ["jobs"], env.clock.now()) is None
        await _unannounced_delayed_order(env, 50)
        # Nothing announced it: the cached answer stands (no query per long-poll).
        assert await due.next_due(NAMESPACE, ["jobs"], env.clock.now()) is None

        order = await env.submit(not_before=_at(env, 20))  # the engine announces this one
        expected = order.spec.not_before.ToDatetime().replace(tzinfo=env.clock.now().tzinfo)
        assert await due.next_due(NAMESPACE, ["jobs"], env.clock.now()) == expected
        # Other queues' sets are cached on their own.
        assert await due.next_due(NAMESPACE, ["jobs", "other"], env.clock.now()) == expected

        # An ordinary submit says nothing about delayed orders: the answer stands.
        await env.submit()
        assert await due.next_due(NAMESPACE, ["jobs"], env.clock.now()) == expected
        # Once that instant has passed, it is looked up again.
        env.clock.advance(21)
        later = await due.next_due(NAMESPACE, ["jobs"], env.clock.now())
        assert later == env.clock.now() + timedelta(seconds=50 - 21)
    finally:
        await due.close()


async def test_answer_expires_after_the_ttl(env: QueueEnv) -> None:
    due = DueTimes(env.engine.store.work_order_next_available, env.platform.coordination, ttl=0)
    try:
        assert await due.next_due(NAMESPACE, ["jobs"], env.clock.now()) is None
        await _unannounced_delayed_order(env, 50)
        assert await due.next_due(NAMESPACE, ["jobs"], env.clock.now()) == (
            env.clock.now() + timedelta(seconds=50)
        )
    finally:
        await due.close()


async def test_failed_attempt_with_backoff_is_announced(env: QueueEnv) -> None:
    due = DueTimes(env.engine.store.work_order_next_available, env.platform.coordination, ttl=300)
    try:
        await env.submit()
        [leased] = await env.lease()
        assert await due.next_due(NAMESPACE, ["jobs"], env.clock.now()) is None
        failed = await env.fail(leased)  # retryable: QUEUED again after a backoff
        retry_at = failed.available_time.ToDatetime().replace(tzinfo=env.clock.now().tzinfo)
        assert retry_at > env.clock.now()
        assert await due.next_due(NAMESPACE, ["jobs"], env.clock.now()) == retry_at
    finally:
        await due.close()


@pytest.fixture
async def trusting_env(
    core: CoreSettings, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[QueueEnv]:
    """A queue whose drained answers outlive the test: the poll interval is their TTL, and
    on a loaded machine the default 1 s can pass between two calls of one test."""
    monkeypatch.setenv("CONVEYOR_QUEUE_POLL_INTERVAL_SECONDS", "3600")
    queue_env = await QueueEnv(core, wall_clock()).start()
    yield queue_env
    await queue_env.stop()


async def test_a_drained_queue_is_not_queried_again_until_something_is_announced(
    trusting_env: QueueEnv,
) -> None:
    env = trusting_env

    async def both_answers_known() -> bool:
        # A long-poll that parks learns both answers: drained, and nothing delayed. One
        # whose statement outlasts its wait (a loaded machine) gives up before asking the
        # second, so try again until one parked.
        assert await env.lease(n=5, wait=0.2) == []
        return not await env.engine._due.may_be_due(NAMESPACE, ["jobs"], env.clock.now())

    await eventually(both_answers_known, "a long-poll parked with both answers known", 30)
    await _unannounced_delayed_order(env, 0)  # available now, but nobody said so
    assert await env.lease(n=5) == []  # the statement was skipped
    second = await env.submit()  # announced: the next lease runs its statement again
    leased = {lw.work_order.id for lw in await env.lease(n=5)}
    assert second.id in leased and len(leased) == 2


async def test_a_delayed_order_falling_due_ends_the_drained_answer(env: QueueEnv) -> None:
    order = await env.submit(not_before=_at(env, 5))
    assert await env.lease(n=5) == []  # drained, and the order falls due in 5 s
    assert await env.lease(n=5) == []
    env.clock.advance(6)
    assert [lw.work_order.id for lw in await env.lease(n=5)] == [order.id]


async def test_a_capped_queue_short_answer_leases_again_once_capacity_frees(env: QueueEnv) -> None:
    await env.stub.UpdateQueue(
        rpc.UpdateQueueRequest(
            queue=m.Queue(name=queue_name(), max_in_flight=1),
            update_mask=field_mask_pb2.FieldMask(paths=["max_in_flight"]),
        )
    )
    await env.submit_many([spec(), spec()])
    [held] = await env.lease(n=5)  # capacity 1: a short answer, yet not drained
    await env.complete(held)  # frees capacity (and wakes leasers of capped queues)
    assert len(await env.lease(n=5)) == 1


async def test_drained_answer_after_a_wake_up_during_the_statement_is_not_kept(
    env: QueueEnv,
) -> None:
    drained = DrainedQueues(env.platform.coordination, ttl=300)
    try:
        mark = await drained.before_lease(NAMESPACE, ["jobs"])
        await env.submit()  # lands while the statement "runs"
        await drained.after_lease(NAMESPACE, ["jobs"], mark, drained=True)
        assert not await drained.drained(NAMESPACE, ["jobs"])
        mark = await drained.before_lease(NAMESPACE, ["jobs"])
        await drained.after_lease(NAMESPACE, ["jobs"], mark, drained=True)
        assert await drained.drained(NAMESPACE, ["jobs"])
        assert not await drained.drained(NAMESPACE, ["jobs", "other"])  # another set
    finally:
        await drained.close()
