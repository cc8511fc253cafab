"""Conformance suite run against every `Coordination` implementation.

`coordination` and `peer` are two replicas sharing one backend: for Redis two
`RedisCoordination` instances on the same key prefix (so a wake-up crossing
them is a cross-replica wake-up); for the in-process implementation, the one
process-wide instance twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import pytest
from redis.asyncio import Redis

from conveyor_core.coordination import (
    Coordination,
    CoordinationUnavailable,
    InProcessCoordination,
    Lease,
    RedisCoordination,
)
from tests.helpers.polling import eventually
from tests.helpers.tcp_proxy import BlackholeProxy

DEADLINE = 10.0  # seconds; generous, only reached when something is broken


class Backend:
    """Makes started replicas of one coordination backend and stops them afterwards."""

    def __init__(self, kind: str, redis_url: str | None = None, prefix: str = "") -> None:
        self.kind = kind
        self._redis_url = redis_url
        self._prefix = prefix
        self._started: list[Coordination] = []
        self._shared = InProcessCoordination() if kind == "inprocess" else None

    async def replica(self, *, prefix: str | None = None, client_name: str = "conveyor-test"):
        if self._shared is not None:
            coordination: Coordination = self._shared
        else:
            assert self._redis_url is not None
            coordination = RedisCoordination(
                self._redis_url,
                self._prefix if prefix is None else prefix,
                client_name=client_name,
            )
        await coordination.start()
        self._started.append(coordination)
        return coordination

    async def stop_all(self) -> None:
        for coordination in reversed(self._started):
            await coordination.stop()


@pytest.fixture(
    params=[
        pytest.param("inprocess"),
        pytest.param("redis", marks=pytest.mark.redis),
    ]
)
def backend_kind(request: pytest.FixtureRequest) -> Backend:
    # Synchronous: pytest-asyncio cannot resolve async fixtures from inside one.
    if request.param == "redis":
        return Backend(
            "redis",
            redis_url=request.getfixturevalue("redis_url"),
            prefix=request.getfixturevalue("redis_prefix"),
        )
    return Backend("inprocess")


@pytest.fixture
async def backend(backend_kind: Backend) -> AsyncIterator[Backend]:
    yield backend_kind
    await backend_kind.stop_all()  # before redis_prefix deletes the keys


@pytest.fixture
async def coordination(backend: Backend) -> Coordination:
    return await backend.replica()


@pytest.fixture
async def peer(backend: Backend, coordination: Coordination) -> Coordination:
    return await backend.replica()


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


# -- lifecycle ----------------------------------------------------------------


async def test_lifecycle_is_idempotent(backend: Backend) -> None:
    coordination = await backend.replica()
    assert isinstance(coordination, Coordination)
    await coordination.start()
    await coordination.ping()
    await coordination.stop()
    await coordination.stop()


# -- wake-ups -----------------------------------------------------------------


async def test_notify_wakes_listener(coordination: Coordination) -> None:
    async with coordination.listen(["q1"]) as listener:
        waiter = asyncio.create_task(listener.wait(DEADLINE))
        await asyncio.sleep(0)  # let it start waiting
        await coordination.notify("q1")
        assert await waiter is True


async def test_notify_wakes_listener_on_other_replica(
    coordination: Coordination, peer: Coordination
) -> None:
    async with peer.listen(["q1"]) as on_peer, coordination.listen(["q1"]) as here:
        waiter = asyncio.create_task(on_peer.wait(DEADLINE))
        await asyncio.sleep(0)
        await coordination.notify("q1")
        assert await waiter is True
        assert await here.wait(DEADLINE) is True  # the sender's own listeners too
        await peer.notify("q1")  # and the other way round
        assert await here.wait(DEADLINE) is True


async def test_notify_before_wait_is_not_lost(
    coordination: Coordination, peer: Coordination
) -> None:
    async with peer.listen(["q1", "q2"]) as listener:
        # "check the database" would happen here; the notify lands before wait().
        await coordination.notify("q2")
        await coordination.notify("q2")
        assert await listener.wait(DEADLINE) is True


async def test_wait_times_out(coordination: Coordination) -> None:
    async with coordination.listen(["quiet"]) as listener:
        started = time.monotonic()
        assert await listener.wait(0.05) is False
        assert 0.04 <= time.monotonic() - started < DEADLINE
        assert await listener.wait(0) is False


async def test_true_consumes_the_notification(coordination: Coordination) -> None:
    async with coordination.listen(["q1"]) as listener:
        await coordination.notify("q1")
        assert await listener.wait(DEADLINE) is True
        assert await listener.wait(0.05) is False


async def test_listeners_on_other_channels_are_not_woken(
    coordination: Coordination, peer: Coordination
) -> None:
    async with (
        peer.listen(["a"]) as on_a,
        peer.listen(["c"]) as on_c,
        coordination.listen(["a"]) as local_a,
    ):
        await coordination.notify("b")
        await coordination.notify("c")
        # Wake-ups arrive in order: once "c" is in, "b" has been handled too.
        assert await on_c.wait(DEADLINE) is True
        assert await on_a.wait(0) is False
        assert await local_a.wait(0) is False


async def test_listener_unregisters_on_exit(coordination: Coordination) -> None:
    async with coordination.listen(["q1"]):
        pass
    await coordination.notify("q1")  # nobody left to wake; must not fail
    with pytest.raises(TypeError):
        async with coordination.listen("q1"):  # type: ignore[arg-type]
            pass


async def _parked_waiters(
    coordination: Coordination, listeners: list, channel: str, count: int
) -> list[asyncio.Task[bool]]:
    """Tasks waiting on each of `listeners`, once `count` of them are parked on `channel`."""
    tasks = [asyncio.create_task(listener.wait(DEADLINE)) for listener in listeners]

    async def parked() -> bool:
        return coordination.parked(channel) == count  # type: ignore[attr-defined]

    await eventually(parked, f"{count} waiters parked on {channel}")
    return tasks


async def test_notify_wakes_that_many_waiters_and_every_watcher(
    coordination: Coordination, peer: Coordination
) -> None:
    async with (
        peer.listen(["q1"], waiter=True) as first,
        peer.listen(["q1"], waiter=True) as second,
        peer.listen(["q1"], waiter=True) as third,
        peer.listen(["q1"]) as watcher,
    ):
        tasks = await _parked_waiters(peer, [first, second, third], "q1", 3)
        await coordination.notify("q1", waiters=1)
        done, waiting = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        assert [task.result() for task in done] == [True]
        assert peer.parked("q1") == 2  # type: ignore[attr-defined]  # the others stay parked
        assert await watcher.wait(DEADLINE) is True  # watchers see every notify
        await coordination.notify("q1", waiters=2)
        assert await asyncio.gather(*waiting) == [True, True]
        await coordination.notify("q1")  # no count: every listener
        assert [await w.wait(DEADLINE) for w in (first, second, third, watcher)] == [True] * 4


async def test_notifies_in_a_row_wake_one_waiter_each(
    coordination: Coordination, peer: Coordination
) -> None:
    async with (
        peer.listen(["q1"], waiter=True) as first,
        peer.listen(["q1"], waiter=True) as second,
        peer.listen(["q1"], waiter=True) as third,
    ):
        tasks = await _parked_waiters(peer, [first, second, third], "q1", 3)
        await coordination.notify("q1", waiters=1)
        await coordination.notify("q1", waiters=1)  # a second order: a second waiter

        async def two_woken() -> bool:
            return sum(task.done() for task in tasks) == 2

        await eventually(two_woken, "two waiters woken")
        assert peer.parked("q1") == 1  # type: ignore[attr-defined]
        await coordination.notify("q1", waiters=1)
        assert await asyncio.gather(*tasks) == [True, True, True]


async def test_a_waiter_leaving_with_an_unused_wake_up_hands_it_on(
    coordination: Coordination,
) -> None:
    async with coordination.listen(["q1"], waiter=True) as staying:
        [task] = await _parked_waiters(coordination, [staying], "q1", 1)
        async with coordination.listen(["q1"], waiter=True) as leaving:
            assert await leaving.wait(0) is False  # between its check and its park
            await coordination.notify("q1", waiters=1)
            # It is not parked, so the parked waiter got the wake-up.
            assert await task is True
            await coordination.notify("q1", waiters=1)  # now `leaving` is the only idle one
        # ... and it left without acting on it: the turn passes on.
        assert await staying.wait(DEADLINE) is True


async def test_a_waiter_failing_after_a_wake_up_hands_it_on(coordination: Coordination) -> None:
    async with coordination.listen(["q1"], waiter=True) as staying:
        with pytest.raises(RuntimeError):
            async with coordination.listen(["q1"], waiter=True) as failing:
                [task] = await _parked_waiters(coordination, [failing], "q1", 1)
                await coordination.notify("q1", waiters=1)
                assert await task is True
                assert await staying.wait(0) is False
                raise RuntimeError("its re-check failed")
        assert await staying.wait(DEADLINE) is True


# -- leases -------------------------------------------------------------------


async def test_lease_is_exclusive(coordination: Coordination, peer: Coordination) -> None:
    name = unique("leader")
    lease = await coordination.lease_acquire(name, "a", ttl=30)
    assert lease == Lease(name=name, holder="a", token=lease.token, ttl=30)
    assert await peer.lease_acquire(name, "b", ttl=30) is None
    assert await coordination.lease_acquire(name, "b", ttl=30) is None
    assert await coordination.lease_renew(lease) is True

    again = await peer.lease_acquire(name, "a", ttl=30)  # same holder: a fresh lease
    assert again is not None and again.token > lease.token
    assert await coordination.lease_renew(lease) is False
    assert await coordination.lease_renew(again) is True


async def test_fencing_tokens_strictly_increase(
    coordination: Coordination, peer: Coordination
) -> None:
    name = unique("leader")
    tokens = []
    for round_number in range(6):
        replica = (coordination, peer)[round_number % 2]
        lease = await replica.lease_acquire(name, f"holder-{round_number}", ttl=30)
        assert lease is not None
        tokens.append(lease.token)
        await replica.lease_release(lease)
    assert tokens == sorted(set(tokens))
    other = await coordination.lease_acquire(unique("other"), "x", ttl=30)
    assert other is not None  # another name has its own lease


async def test_renew_fails_after_expiry_and_takeover(
    coordination: Coordination, peer: Coordination
) -> None:
    name = unique("leader")
    old = await coordination.lease_acquire(name, "a", ttl=0.2)
    assert old is not None
    taken: list[Lease] = []

    async def peer_takes_over() -> bool:
        lease = await peer.lease_acquire(name, "b", ttl=30)
        taken.extend([lease] if lease else [])
        return lease is not None

    await eventually(peer_takes_over, "b acquires the expired lease")
    new = taken[0]
    assert new.token > old.token
    assert await coordination.lease_renew(old) is False
    assert await peer.lease_renew(new) is True


async def test_renew_fails_after_expiry(coordination: Coordination) -> None:
    lease = await coordination.lease_acquire(unique("leader"), "a", ttl=0.1)
    assert lease is not None
    await asyncio.sleep(0.3)
    assert await coordination.lease_renew(lease) is False


async def test_release_by_stale_lease_does_nothing(
    coordination: Coordination, peer: Coordination
) -> None:
    name = unique("leader")
    old = await coordination.lease_acquire(name, "a", ttl=0.1)
    assert old is not None
    await eventually(lambda: _acquired(peer, name, "b"), "b acquires the expired lease")
    await coordination.lease_release(old)
    assert await coordination.lease_acquire(name, "c", ttl=30) is None


async def _acquired(coordination: Coordination, name: str, holder: str) -> bool:
    return await coordination.lease_acquire(name, holder, ttl=30) is not None


async def test_release_frees_the_lease(coordination: Coordination, peer: Coordination) -> None:
    name = unique("leader")
    lease = await coordination.lease_acquire(name, "a", ttl=30)
    assert lease is not None
    await coordination.lease_release(lease)
    await coordination.lease_release(lease)  # twice is harmless
    assert await peer.lease_acquire(name, "b", ttl=30) is not None
    assert await coordination.lease_renew(lease) is False


async def test_lease_arguments_are_checked(coordination: Coordination) -> None:
    for name, holder, ttl in [("", "a", 1.0), ("n", "", 1.0), ("n", "a", 0.0)]:
        with pytest.raises(ValueError):
            await coordination.lease_acquire(name, holder, ttl)


# -- counters -----------------------------------------------------------------


async def test_counters_add_and_get(coordination: Coordination, peer: Coordination) -> None:
    name = unique("dispatched")
    assert await coordination.counter_add(name) == 1
    assert await peer.counter_add(name, 4) == 5
    assert await coordination.counter_add(name, -2) == 3
    assert await peer.counters_get([name, unique("missing"), name]) == [3, 0, 3]
    assert await coordination.counters_get([]) == []


async def test_counter_expires_after_ttl_from_first_add(
    coordination: Coordination, peer: Coordination
) -> None:
    name, lasting = unique("minute"), unique("lasting")
    assert await coordination.counter_add(name, 2, ttl=0.3) == 2
    assert await peer.counter_add(name, 1, ttl=3600) == 3  # does not extend the window
    await coordination.counter_add(lasting, 1, ttl=3600)

    async def expired() -> bool:
        return await peer.counters_get([name]) == [0]

    await eventually(expired, "the counter expires")
    assert await coordination.counters_get([lasting]) == [1]
    assert await coordination.counter_add(name, 1, ttl=30) == 1  # starts over


# -- compare-and-set values ---------------------------------------------------


async def test_value_compare_and_set_is_shared_and_exclusive(
    coordination: Coordination, peer: Coordination
) -> None:
    name = unique("breaker")
    assert await coordination.value_get(name) is None
    assert await coordination.value_compare_and_set(name, None, "v1")
    assert not await peer.value_compare_and_set(name, None, "other")  # no longer missing
    assert await peer.value_get(name) == "v1"
    assert not await peer.value_compare_and_set(name, "stale", "v2")
    assert await peer.value_compare_and_set(name, "v1", "v2")
    assert not await coordination.value_compare_and_set(name, "v1", "v3")  # lost the race
    assert await coordination.value_get(name) == "v2"


async def test_value_compare_and_set_races_have_one_winner(
    coordination: Coordination, peer: Coordination
) -> None:
    name = unique("race")
    await coordination.value_compare_and_set(name, None, "0")
    outcomes = await asyncio.gather(
        *(
            replica.value_compare_and_set(name, "0", f"{n}")
            for n, replica in enumerate([coordination, peer] * 5, start=1)
        )
    )
    assert sum(outcomes) == 1


async def test_value_expires_after_ttl(coordination: Coordination, peer: Coordination) -> None:
    name, lasting = unique("short"), unique("lasting")
    assert await coordination.value_compare_and_set(name, None, "x", ttl=0.3)
    assert await coordination.value_compare_and_set(lasting, None, "y", ttl=3600)

    async def expired() -> bool:
        return await peer.value_get(name) is None

    await eventually(expired, "the value expires")
    assert await peer.value_compare_and_set(name, None, "again")  # missing again
    assert await coordination.value_get(lasting) == "y"
    with pytest.raises(ValueError, match="ttl"):
        await coordination.value_compare_and_set(name, "again", "z", ttl=0)


# -- rate limits --------------------------------------------------------------


async def test_new_bucket_grants_burst_then_nothing(
    coordination: Coordination, peer: Coordination
) -> None:
    key = unique("endpoint")
    slow = 0.01  # tokens per second: no whole token refills during the test
    assert await coordination.rate_limit_take(key, 10, rate=slow, burst=5) == 5
    assert await peer.rate_limit_take(key, 1, rate=slow, burst=5) == 0
    other = unique("endpoint")
    assert await coordination.rate_limit_take(other, 3, rate=slow, burst=5) == 3
    assert await peer.rate_limit_take(other, 3, rate=slow, burst=5) == 2
    assert await peer.rate_limit_take(other, 0, rate=slow, burst=5) == 0


async def test_bucket_refills_at_rate_up_to_burst(coordination: Coordination) -> None:
    key = unique("endpoint")
    assert await coordination.rate_limit_take(key, 3, rate=50, burst=3) == 3

    async def refilled() -> bool:
        return await coordination.rate_limit_take(key, 1, rate=50, burst=3) == 1

    await eventually(refilled, "a token refills")

    capped = unique("endpoint")
    assert await coordination.rate_limit_take(capped, 4, rate=1000, burst=4) == 4
    await asyncio.sleep(0.05)  # ~50 tokens' worth of time; the bucket holds 4
    assert await coordination.rate_limit_take(capped, 100, rate=1000, burst=4) == 4


async def test_rate_limit_refill_is_bounded_by_rate(coordination: Coordination) -> None:
    key = unique("endpoint")
    started = time.monotonic()
    taken = await coordination.rate_limit_take(key, 100, rate=20, burst=2)
    while time.monotonic() - started < 0.3:
        taken += await coordination.rate_limit_take(key, 100, rate=20, burst=2)
        await asyncio.sleep(0.01)
    elapsed = time.monotonic() - started
    # burst + rate * elapsed, with a token of slack for clock granularity.
    assert 2 <= taken <= 2 + 20 * elapsed + 1


async def test_rate_limit_arguments_are_checked(coordination: Coordination) -> None:
    for requested, rate, burst in [(-1, 1.0, 1), (1, 0.0, 1), (1, 1.0, 0)]:
        with pytest.raises(ValueError):
            await coordination.rate_limit_take("k", requested, rate, burst)


# -- Redis only -----------------------------------------------------------------


@pytest.fixture
async def redis_backend(redis_url: str, redis_prefix: str) -> AsyncIterator[Backend]:
    made = Backend("redis", redis_url=redis_url, prefix=redis_prefix)
    yield made
    await made.stop_all()


async def test_redis_subscriber_survives_client_kill(
    redis_backend: Backend, redis_url: str
) -> None:
    client_name = unique("conveyor-test-kill")
    sender = await redis_backend.replica()
    receiver = await redis_backend.replica(client_name=client_name)
    async with receiver.listen(["q1"]) as listener, Redis.from_url(redis_url) as admin:
        killed = 0
        for client in await admin.client_list(_type="pubsub"):
            if client["name"] == f"{client_name}-wake":
                killed += await admin.execute_command(
                    "CLIENT", "KILL", "TYPE", "pubsub", "ID", client["id"]
                )
        assert killed == 1
        # Wake-ups sent while disconnected are lost, so resubscribing wakes everyone.
        assert await listener.wait(DEADLINE) is True
        await sender.notify("q1")
        assert await listener.wait(DEADLINE) is True


async def test_redis_wake_up_is_published_after_the_publishing_connection_died(
    redis_backend: Backend, redis_url: str
) -> None:
    client_name = unique("conveyor-test-publisher")
    sender = await redis_backend.replica(client_name=client_name)
    receiver = await redis_backend.replica()
    async with receiver.listen(["q1"]) as listener, Redis.from_url(redis_url) as admin:
        await sender.notify("q1")  # opens the sender's publishing connection
        assert await listener.wait(DEADLINE) is True
        killed = 0
        for client in await admin.client_list(_type="normal"):
            if client["name"] == client_name:  # its command and publishing connections
                killed += await admin.execute_command("CLIENT", "KILL", "ID", client["id"])
        assert killed >= 1
        await sender.notify("q1")  # found dead on the way: reconnected, sent again
        assert await listener.wait(DEADLINE) is True


async def test_redis_subscriber_detects_silent_partition(
    redis_url: str, redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    target = urlsplit(redis_url)
    proxy = BlackholeProxy(target.hostname or "127.0.0.1", target.port or 6379)
    credentials = target.netloc.rpartition("@")[0]
    netloc = f"{credentials}@127.0.0.1:{await proxy.start()}".lstrip("@")
    receiver = RedisCoordination(
        urlunsplit(target._replace(netloc=netloc)), redis_prefix, command_timeout=0.5
    )
    receiver.idle_ping_after, receiver.pong_timeout = 0.1, 0.2
    sender = RedisCoordination(redis_url, redis_prefix)
    caplog.set_level(logging.WARNING, logger="conveyor_core.coordination.redis")
    try:
        await receiver.start()
        await sender.start()
        async with receiver.listen(["q1"]) as listener:
            proxy.blackholed = True  # the socket stays open, nothing gets through
            await sender.notify("q1")  # lost in the partition

            async def noticed() -> bool:
                return any("subscription" in record.message for record in caplog.records)

            await eventually(noticed, "the subscriber notices the silence")
            proxy.blackholed = False
            assert await listener.wait(DEADLINE) is True  # resubscribed: everyone re-checks
            await sender.notify("q1")
            assert await listener.wait(DEADLINE) is True
    finally:
        await receiver.stop()
        await sender.stop()
        await proxy.stop()


async def test_redis_prefixes_are_isolated(redis_backend: Backend, redis_prefix: str) -> None:
    first = await redis_backend.replica()
    second = await redis_backend.replica(prefix=f"{redis_prefix}other:")
    async with second.listen(["q1"]) as on_second, second.listen(["done"]) as done:
        await first.notify("q1")
        await second.notify("done")
        assert await done.wait(DEADLINE) is True
        assert await on_second.wait(0) is False
    await first.counter_add("shared-name", 5)
    assert await second.counters_get(["shared-name"]) == [0]
    assert await second.lease_acquire("leader", "b", ttl=30) is not None
    assert await first.lease_acquire("leader", "a", ttl=30) is not None


async def test_redis_unreachable_raises_unavailable() -> None:
    coordination = RedisCoordination(
        "redis://127.0.0.1:1/0", "unreachable:", connect_timeout=0.5, command_timeout=0.5
    )
    try:
        with pytest.raises(CoordinationUnavailable):
            await coordination.ping()
        with pytest.raises(CoordinationUnavailable):
            await coordination.start()
        with pytest.raises(CoordinationUnavailable):
            await coordination.counter_add("x")
        await coordination.notify("q1")  # logged, not raised: local listeners still woken
    finally:
        await coordination.stop()
