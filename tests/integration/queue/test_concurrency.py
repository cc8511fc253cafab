"""Concurrent leasers, concurrent replicas, wake-up latency and restarts."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest

from conveyor.queue.v1 import messages_pb2 as m
from conveyor.queue.v1 import service_pb2 as rpc
from conveyor_core.settings import CoreSettings
from conveyor_queue.domain.model import QueueRef
from tests.helpers.queue import NAMESPACE, QueueEnv, queue_name, spec, wall_clock

S = m.WorkOrderState


async def _drain(env: QueueEnv, worker: str, seen: Counter, batch: int) -> None:
    while True:
        leased = await env.lease(n=batch, worker=worker, lease=120)
        if not leased:
            return
        for lw in leased:
            seen[lw.work_order.id] += 1
        await env.stub.BatchCompleteWorkOrders(
            rpc.BatchCompleteWorkOrdersRequest(
                parent="namespaces/test",
                requests=[
                    rpc.CompleteWorkOrderRequest(
                        name=lw.work_order.name, lease_token=lw.lease_token
                    )
                    for lw in leased
                ],
            )
        )


async def test_eight_concurrent_leasers_lease_each_of_2000_orders_exactly_once(
    env: QueueEnv,
) -> None:
    submitted = []
    for chunk in range(0, 2000, 500):
        submitted += await env.submit_many(
            [spec(priority=i % 4) for i in range(chunk, chunk + 500)]
        )
    seen: Counter = Counter()
    await asyncio.gather(*(_drain(env, f"w{i}", seen, batch=1 + i * 3) for i in range(8)))
    assert len(submitted) == 2000
    assert set(seen) == {o.id for o in submitted}, "an order was lost"
    assert max(seen.values()) == 1, "an order was leased twice"
    stats = (await env.stub.GetQueueStats(rpc.GetQueueStatsRequest(name=queue_name()))).stats
    assert {d.state: d.count for d in stats.depth} == {S.WORK_ORDER_STATE_SUCCEEDED: 2000}


async def test_two_replicas_on_one_database_never_share_an_order(core: CoreSettings) -> None:
    """Two servers on one database (PostgreSQL+Redis; the same SQLite file in the embedded case)."""
    first = await QueueEnv(core, wall_clock()).start()
    second = await QueueEnv(core, wall_clock()).start()
    try:
        orders = await first.submit_many([spec() for _ in range(300)])
        seen: Counter = Counter()
        await asyncio.gather(
            *(
                _drain(e, f"{n}-{i}", seen, batch=7)
                for n, e in (("a", first), ("b", second))
                for i in range(3)
            )
        )
        assert set(seen) == {o.id for o in orders} and max(seen.values()) == 1
    finally:
        await second.stop()
        await first.stop()


# A waiting lease call that is never woken returns after its whole wait; one
# that is woken returns at once, so WOKEN_WITHIN tells them apart however
# busy the machine is (the usual 1 s re-poll would blur that into latency).
LONG_WAIT = 60.0  # the longest wait QueueSettings allows
WOKEN_WITHIN = 20.0


def _repoll_never(env: QueueEnv) -> None:
    """Waiting lease calls re-check only when woken (or when their wait ends)."""
    env.engine.settings = env.engine.settings.model_copy(update={"poll_interval_seconds": 3600.0})


async def test_long_polling_leaser_is_woken_by_a_submit(env: QueueEnv) -> None:
    _repoll_never(env)
    for _ in range(20):
        waiter = asyncio.create_task(env.lease(wait=LONG_WAIT))
        # Usually the call is waiting by now; if not, its first statement finds
        # the order instead (this round then proves less, but cannot fail).
        await asyncio.sleep(0.02)
        order = await env.submit()
        [leased] = await asyncio.wait_for(waiter, WOKEN_WITHIN)
        assert leased.work_order.id == order.id
        await env.complete(leased)


class _CountedLeases:
    """Counts the engine's lease statements (the store call each lease attempt makes)."""

    def __init__(self, env: QueueEnv, monkeypatch: pytest.MonkeyPatch) -> None:
        self.statements = 0
        store = env.engine.store
        lease = store.work_order_lease_available

        async def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
            self.statements += 1
            return await lease(*args, **kwargs)

        monkeypatch.setattr(store, "work_order_lease_available", counted)


async def _parked(env: QueueEnv, count: int) -> None:
    """Wait until `count` lease calls of the jobs queue are parked with no wake-up pending."""
    coordination = env.platform.coordination  # type: ignore[union-attr]
    channel = QueueRef(NAMESPACE, "jobs").channel
    deadline = time.monotonic() + 10
    while coordination.parked(channel) != count:  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, f"not {count} parked: {coordination.parked(channel)}"  # type: ignore[attr-defined]
        await asyncio.sleep(0.01)


async def test_a_submit_wakes_one_parked_leaser_and_n_submits_wake_n(
    env: QueueEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    _repoll_never(env)  # under load a periodic re-check would run the parked leasers too
    counted = _CountedLeases(env, monkeypatch)
    leasers = [asyncio.create_task(env.lease(wait=30, worker=f"w{i}")) for i in range(4)]
    await _parked(env, 4)
    before = counted.statements

    order = await env.submit()
    done, parked = await asyncio.wait(leasers, return_when=asyncio.FIRST_COMPLETED)
    [[leased]] = [task.result() for task in done]
    assert leased.work_order.id == order.id
    # The three others were never woken: still parked, and no lease statement of theirs ran
    # (woken ones would have run one each before parking again).
    await _parked(env, 3)
    assert counted.statements - before == 1

    orders = await env.submit_many([spec(), spec()])  # two orders: two leasers
    done, still_parked = set(), parked
    while len(done) < 2:
        more, still_parked = await asyncio.wait(
            still_parked, timeout=10, return_when=asyncio.FIRST_COMPLETED
        )
        assert more, "a second leaser was not woken"
        done |= more
    await _parked(env, 1)
    assert {task.result()[0].work_order.id for task in done} == {o.id for o in orders}
    assert counted.statements - before == 3

    await env.submit()
    [[last]] = await asyncio.gather(*still_parked)
    assert counted.statements - before == 4
    assert last.work_order.id not in {order.id, *(o.id for o in orders)}


async def test_wake_up_crosses_replicas(core: CoreSettings) -> None:
    """A leaser on replica B wakes for a submit on replica A (Redis pub/sub; in-process shares)."""
    replica_a = await QueueEnv(core, wall_clock()).start()
    replica_b = await QueueEnv(
        core,
        wall_clock(),
        coordination=(replica_a.platform.coordination if not core.redis_url else None),
    ).start()
    _repoll_never(replica_b)
    try:
        waiter = asyncio.create_task(replica_b.lease(wait=LONG_WAIT))
        await asyncio.sleep(0.05)  # usually waiting by now (see above)
        order = await replica_a.submit()
        [leased] = await asyncio.wait_for(waiter, WOKEN_WITHIN)
        assert leased.work_order.id == order.id
    finally:
        await replica_b.stop()
        await replica_a.stop()


async def test_long_poll_returns_empty_after_its_wait(env: QueueEnv) -> None:
    started = time.perf_counter()
    assert await env.lease(wait=0.3) == []
    assert time.perf_counter() - started >= 0.29


async def test_restart_in_the_middle_of_leased_work_loses_nothing(core: CoreSettings) -> None:
    clock = wall_clock()
    env = await QueueEnv(core, clock).start()
    orders = await env.submit_many([spec(data=str(i).encode()) for i in range(50)])
    leased = await env.lease(n=20, lease=30)
    await env.complete(leased[0])
    await env.stop()  # the service goes away with 19 orders leased and 30 queued

    env = await QueueEnv(core, clock).start()
    try:
        listed = await env.stub.ListWorkOrders(
            rpc.ListWorkOrdersRequest(parent=queue_name(), page_size=100)
        )
        states = Counter(o.state for o in listed.work_orders)
        assert states == {
            S.WORK_ORDER_STATE_SUCCEEDED: 1,
            S.WORK_ORDER_STATE_LEASED: 19,
            S.WORK_ORDER_STATE_QUEUED: 30,
        }
        # the surviving worker can still finish its leases on the new process
        assert (await env.complete(leased[1])).state == S.WORK_ORDER_STATE_SUCCEEDED
        # the rest come back after their leases expire, and everything completes once
        clock.advance(31)
        assert await env.sweep() == 18
        clock.advance(2)  # an expired lease is a failed attempt: past its retry backoff
        done: Counter = Counter()
        await _drain(env, "after-restart", done, batch=25)
        assert len(done) == 48 and max(done.values()) == 1
        final = await env.stub.ListWorkOrders(
            rpc.ListWorkOrdersRequest(parent=queue_name(), page_size=100)
        )
        assert {o.id for o in final.work_orders} == {o.id for o in orders}
        assert all(o.state == S.WORK_ORDER_STATE_SUCCEEDED for o in final.work_orders)
    finally:
        await env.stop()
