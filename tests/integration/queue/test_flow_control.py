"""Capacity, per-key concurrency, fairness, rate limits and pause: all queue, never reject."""

from __future__ import annotations

import asyncio
from collections import Counter

from google.protobuf import field_mask_pb2

from conveyor.queue.v1 import messages_pb2 as m
from conveyor.queue.v1 import service_pb2 as rpc
from conveyor_core.settings import CoreSettings
from tests.helpers.queue import QueueEnv, parked, queue_name, seconds, spec, wall_clock


async def configure(env: QueueEnv, queue: str = "jobs", **fields) -> m.Queue:  # type: ignore[no-untyped-def]
    message = m.Queue(name=queue_name(queue), **fields)
    response = await env.stub.UpdateQueue(
        rpc.UpdateQueueRequest(
            queue=message, update_mask=field_mask_pb2.FieldMask(paths=list(fields))
        )
    )
    return response.queue


async def test_capacity_cap_holds_orders_queued(env: QueueEnv) -> None:
    await configure(env, max_in_flight=3)
    orders = await env.submit_many([spec() for _ in range(10)])
    assert len(orders) == 10  # at capacity the queue accepts, never rejects
    first = await env.lease(n=10)
    assert len(first) == 3
    assert await env.lease(n=10) == []
    await env.complete(first[0])
    assert len(await env.lease(n=10)) == 1
    stats = (await env.stub.GetQueueStats(rpc.GetQueueStatsRequest(name=queue_name()))).stats
    assert stats.in_flight == 3
    assert {d.state: d.count for d in stats.depth}[m.WorkOrderState.WORK_ORDER_STATE_QUEUED] == 6


async def test_completion_wakes_a_leaser_waiting_at_capacity(env: QueueEnv) -> None:
    await configure(env, max_in_flight=1)
    await env.submit_many([spec(), spec()])
    [held] = await env.lease()
    waiter = asyncio.create_task(env.lease(wait=10))
    await parked(env, 1)
    await env.complete(held)
    assert len(await asyncio.wait_for(waiter, 5)) == 1


async def test_per_key_concurrency_limit(env: QueueEnv) -> None:
    await configure(env, max_in_flight_per_key=2)
    await env.submit_many(
        [spec(concurrency_key="tenant-a") for _ in range(6)]
        + [spec(concurrency_key="tenant-b") for _ in range(3)]
    )
    leased = await env.lease(n=10)
    assert Counter(lw.work_order.spec.concurrency_key for lw in leased) == {
        "tenant-a": 2,
        "tenant-b": 2,
    }
    assert await env.lease(n=10) == []
    a = next(lw for lw in leased if lw.work_order.spec.concurrency_key == "tenant-a")
    await env.complete(a)
    [next_one] = await env.lease(n=10)
    assert next_one.work_order.spec.concurrency_key == "tenant-a"


async def test_fair_round_robin_between_keys(env: QueueEnv) -> None:
    await configure(env, fair=True)
    await env.submit_many([spec(concurrency_key="busy") for _ in range(30)])
    await env.submit_many(
        [spec(concurrency_key="small-1") for _ in range(3)]
        + [spec(concurrency_key="small-2") for _ in range(3)]
    )
    served = []
    for _ in range(9):  # one at a time, each completed at once: only rotation helps the small keys
        [lw] = await env.lease()
        served.append(lw.work_order.spec.concurrency_key)
        await env.complete(lw)
    assert Counter(served) == {"busy": 3, "small-1": 3, "small-2": 3}
    assert len(set(served[:3])) == 3
    batch = await env.lease(n=6)  # a batch spreads across keys too: only "busy" is left
    assert Counter(lw.work_order.spec.concurrency_key for lw in batch) == {"busy": 6}


async def test_fairness_respects_priority_first(env: QueueEnv) -> None:
    await configure(env, fair=True)
    await env.submit_many([spec(concurrency_key="a") for _ in range(3)])
    urgent = await env.submit(concurrency_key="b", priority=7)
    [first] = await env.lease()
    assert first.work_order.id == urgent.id


async def test_queue_rate_limit_is_shared_by_replicas(core: CoreSettings) -> None:
    one = await QueueEnv(core, wall_clock()).start()
    two = await QueueEnv(
        core, wall_clock(), coordination=(one.platform.coordination if not core.redis_url else None)
    ).start()
    try:
        await configure(one, rate_limit=m.RateLimit(tokens=5, period=seconds(3600), burst=5))
        await one.submit_many([spec() for _ in range(20)])
        got = len(await one.lease(n=3)) + len(await two.lease(n=20)) + len(await one.lease(n=20))
        assert got == 5  # the bucket is shared: 5 in all, not 5 per replica
        assert await two.lease(n=20) == []
    finally:
        await two.stop()
        await one.stop()


async def test_per_key_rate_limit(env: QueueEnv) -> None:
    await configure(env, rate_limit_per_key=m.RateLimit(tokens=2, period=seconds(3600)))
    await env.submit_many([spec(concurrency_key=k) for k in "aaaaabbbbb"])
    leased = await env.lease(n=10)
    assert Counter(lw.work_order.spec.concurrency_key for lw in leased) == {"a": 2, "b": 2}
    assert await env.lease(n=10) == []


async def test_pause_stops_leasing_and_resume_wakes_waiters(env: QueueEnv) -> None:
    paused = (await env.stub.PauseQueue(rpc.PauseQueueRequest(name=queue_name()))).queue
    assert paused.paused
    order = await env.submit()  # submits are still accepted
    assert await env.lease() == []
    waiter = asyncio.create_task(env.lease(wait=10))
    await parked(env, 1)
    resumed = (await env.stub.ResumeQueue(rpc.ResumeQueueRequest(name=queue_name()))).queue
    assert not resumed.paused
    [leased] = await asyncio.wait_for(waiter, 5)
    assert leased.work_order.id == order.id


async def test_queue_settings_round_trip(env: QueueEnv) -> None:
    await configure(env, max_in_flight=4, fair=True)
    await configure(env, max_in_flight_per_key=2)  # an update mask leaves the other fields alone
    got = (await env.stub.GetQueue(rpc.GetQueueRequest(name=queue_name()))).queue
    assert (got.max_in_flight, got.fair, got.max_in_flight_per_key) == (4, True, 2)
    await env.submit(queue="other")
    listed = (await env.stub.ListQueues(rpc.ListQueuesRequest(parent="namespaces/test"))).queues
    assert [q.queue_id for q in listed] == ["jobs", "other"]
