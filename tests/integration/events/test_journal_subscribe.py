"""SubscribeJournal: catch-up then live, no gap or duplicate at the seam, resume, back-pressure."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import grpc
import pytest

from conveyor.events.v1 import messages_pb2 as pb
from conveyor.events.v1 import service_pb2 as rpc
from conveyor.events.v1 import service_pb2_grpc
from conveyor_core.settings import CoreSettings
from conveyor_events.settings import EventStoreSettings
from tests.helpers.journal import JournalEnv, eventually, positions_of, record, until_stable

PAGE = 7
# Long enough that only a wake-up (not the poll) can deliver a live record in time.
POLL_SECONDS = 30.0
DEADLINE = 10.0


def settings(**overrides: object) -> EventStoreSettings:
    values: dict[str, object] = {"subscribe_page": PAGE, "subscribe_poll_seconds": POLL_SECONDS}
    return EventStoreSettings(**(values | overrides))  # type: ignore[arg-type]


@pytest.fixture
async def env(core: CoreSettings) -> AsyncIterator[JournalEnv]:
    journal_env = await JournalEnv(core, settings()).start()
    yield journal_env
    await journal_env.stop()


def subscribe(env: JournalEnv, after: int = 0, **filter_fields: str) -> grpc.aio.UnaryStreamCall:
    return env.stub.SubscribeJournal(
        rpc.SubscribeJournalRequest(after_position=after, filter=rpc.JournalFilter(**filter_fields))
    )


async def take(call: grpc.aio.UnaryStreamCall, count: int) -> list[pb.JournalRecord]:
    out: list[pb.JournalRecord] = []
    async with asyncio.timeout(DEADLINE):
        while len(out) < count:
            response = await call.read()
            assert response is not grpc.aio.EOF, "the stream ended early"
            out.append(response.record)
    return out


async def test_catch_up_then_live(env: JournalEnv) -> None:
    await env.append(*(record(f"old-{i}") for i in range(PAGE * 2 + 3)))
    call = subscribe(env)
    caught_up = await take(call, PAGE * 2 + 3)
    assert positions_of(caught_up) == list(range(1, PAGE * 2 + 4))
    await env.append(record("new-1"), record("new-2"))  # wakes the waiting subscription
    live = await take(call, 2)
    assert [(r.position, r.id) for r in live] == [(PAGE * 2 + 4, "new-1"), (PAGE * 2 + 5, "new-2")]
    call.cancel()


async def test_no_gap_and_no_duplicate_at_the_seam_under_concurrent_appends(
    env: JournalEnv,
) -> None:
    await env.append(*(record(f"pre-{i}") for i in range(40)))
    call = subscribe(env)

    async def appender(n: int) -> None:
        for batch in range(10):
            await env.append(*(record(f"a{n}-{batch}-{i}") for i in range(3)))

    appenders = asyncio.gather(*(appender(n) for n in range(4)))
    received = await take(call, 40 + 4 * 10 * 3)
    await appenders
    assert positions_of(received) == list(range(1, 40 + 120 + 1))
    call.cancel()


async def test_resumes_after_a_disconnect_from_the_last_position_seen(env: JournalEnv) -> None:
    await env.append(*(record(f"r{i}") for i in range(20)))
    first = subscribe(env)
    seen = await take(first, 12)
    first.cancel()
    await env.append(*(record(f"s{i}") for i in range(5)))
    second = subscribe(env, after=seen[-1].position)
    rest = await take(second, 13)
    assert positions_of(seen + rest) == list(range(1, 26))
    second.cancel()
    # The server let go of both subscriptions.
    await eventually(lambda: env.engine.stats.active == 0)


async def test_subscription_filters(env: JournalEnv) -> None:
    await env.append(
        *(record(f"r{i}", "queue.work_order.leased" if i % 3 else "other.kind") for i in range(30))
    )
    call = subscribe(env, type_prefix="queue.")
    got = await take(call, 20)
    assert all(r.type == "queue.work_order.leased" for r in got)
    await env.append(record("x", "other.kind"), record("y", "queue.work_order.queued"))
    [live] = await take(call, 1)
    assert live.id == "y" and live.position == 32
    call.cancel()


async def test_invalid_subscription_is_refused(env: JournalEnv) -> None:
    call = subscribe(env, after=-5)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_slow_subscriber_does_not_grow_server_memory(
    core: CoreSettings, caplog: pytest.LogCaptureFixture
) -> None:
    env = await JournalEnv(core, settings(subscribe_page=10)).start()
    # A fixed 64 kB HTTP/2 window (no BDP probing, which would grow it to megabytes)
    # makes "how much the server reads ahead" small and predictable.
    channel = grpc.aio.insecure_channel(env.address, options=[("grpc.http2.bdp_probe", 0)])
    try:
        big = {f"k{i}": "v" * 1000 for i in range(4)}  # about 4 kB per record
        total = 1200
        for start in range(0, total, 400):
            await env.append(*(record(f"r{i}", attributes=big) for i in range(start, start + 400)))
        call = service_pb2_grpc.JournalServiceStub(channel).SubscribeJournal(
            rpc.SubscribeJournalRequest()
        )
        received = await take(call, 5)
        # The client stops reading: flow control makes the server's writes wait, and the
        # subscription stops reading the journal once the window is full.
        stats = env.engine.stats
        await until_stable(lambda: stats.records_read)
        assert stats.records_read <= 100, f"read {stats.records_read} of {total} while paused"
        assert stats.buffered <= 10
        while len(received) < total:  # a slow reader drains the rest
            received += await take(call, min(50, total - len(received)))
            await asyncio.sleep(0.001)
        assert positions_of(received) == list(range(1, total + 1))
        assert stats.high_water <= 10, "more than one page was held at once"
        # Cancelling while the server's write waits on flow control is a clean cancel.
        await env.append(*(record(f"more-{i}", attributes=big) for i in range(100)))
        await until_stable(lambda: stats.records_read)
        with caplog.at_level(logging.WARNING):
            call.cancel()
            await eventually(lambda: stats.active == 0)
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    finally:
        await channel.close()
        await env.stop()


async def test_a_wake_up_crosses_replicas(postgres_core: CoreSettings) -> None:
    writer = await JournalEnv(postgres_core, settings()).start()
    reader = await JournalEnv(postgres_core, settings()).start()
    try:
        call = subscribe(reader)
        await eventually(lambda: reader.engine.stats.pages_read >= 1)  # caught up and waiting
        await writer.append(record("via-redis"))
        [got] = await take(call, 1)  # well within POLL_SECONDS: the Redis wake-up did it
        assert got.id == "via-redis"
        call.cancel()
    finally:
        await reader.stop()
        await writer.stop()


async def test_live_subscribers_share_their_reads(env: JournalEnv) -> None:
    """Ten live subscribers each get every record, in order, with one read per wake-up."""
    calls = [subscribe(env) for _ in range(10)]
    await eventually(lambda: env.engine.stats.active == 10 and env.engine.stats.pages_read >= 10)
    await eventually(lambda: env.engine.shared_reads.queries >= 1)
    before = env.engine.shared_reads.queries
    for i in range(5):
        await env.append(record(f"live-{i}"))  # each append wakes all ten at once
        got = await asyncio.gather(*(take(call, 1) for call in calls))
        assert {r.position for [r] in got} == {i + 1}
    # Unshared, that would be 10 reads per append (50); a wake-up wakes them together,
    # so each append costs about one read (a straggler may still read alone).
    assert env.engine.shared_reads.queries - before <= 15
    assert env.engine.stats.records_read >= 50  # but every subscription got each record
    for call in calls:
        call.cancel()
    await eventually(lambda: env.engine.stats.active == 0)


async def test_a_cancelled_subscriber_does_not_cancel_a_shared_read(env: JournalEnv) -> None:
    leaving, staying = subscribe(env), subscribe(env)
    await eventually(lambda: env.engine.stats.active == 2 and env.engine.stats.pages_read >= 2)
    await env.append(record("first"))
    leaving.cancel()
    [got] = await take(staying, 1)
    assert got.id == "first"
    await env.append(record("second"))
    [got] = await take(staying, 1)
    assert got.id == "second"
    staying.cancel()
    await eventually(lambda: env.engine.stats.active == 0)
