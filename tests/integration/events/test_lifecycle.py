"""Topics, publish, reserve/consume/release, skip and handler state, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

import grpc

from conveyor.events.v1 import service_pb2 as rpc
from conveyor_core.context import CORRELATION_METADATA_KEY
from tests.helpers.events import (
    EventsEnv,
    S,
    draft,
    namespace_name,
    payload,
    rpc_error,
    state_name,
    topic_name,
)


async def test_topics_are_created_explicitly_and_listed_per_workflow(env: EventsEnv) -> None:
    created = await env.create_topic("orders", workflow="shop")
    assert created.name == topic_name("orders") and created.workflow == "shop"
    assert created.HasField("create_time")
    await env.create_topic("invoices", workflow="billing")
    await env.create_topic("audit")
    again = await rpc_error(env.create_topic("orders"))
    assert again.code == grpc.StatusCode.ALREADY_EXISTS

    got = await env.stub.GetTopic(rpc.GetTopicRequest(name=topic_name("orders")))
    assert got.topic == created
    listed = await env.stub.ListTopics(rpc.ListTopicsRequest(parent=namespace_name()))
    assert [t.topic_id for t in listed.topics] == ["audit", "invoices", "orders"]
    shop = await env.stub.ListTopics(
        rpc.ListTopicsRequest(parent=namespace_name(), workflow="shop")
    )
    assert [t.topic_id for t in shop.topics] == ["orders"]
    other = await env.stub.ListTopics(rpc.ListTopicsRequest(parent="namespaces/other"))
    assert list(other.topics) == []

    missing = await rpc_error(env.stub.GetTopic(rpc.GetTopicRequest(name=topic_name("nope"))))
    assert missing.code == grpc.StatusCode.NOT_FOUND
    assert missing.resource_name == topic_name("nope")


async def test_publish_assigns_sequences_and_is_idempotent_per_message_id(
    env: EventsEnv, topic: str
) -> None:
    first = await env.publish([draft("a", data=b"1"), draft("b"), draft("a", title="again")])
    assert [e.sequence for e in first.events] == [1, 2, 1]
    assert list(first.already_published) == [False, False, True]
    assert first.events[0].name == f"{topic_name()}/events/1"
    assert first.events[0].topic == topic_name()
    assert first.events[0].status == S.EVENT_STATUS_PENDING
    again = await env.publish([draft("b", title="changed"), draft("c")])
    assert [e.sequence for e in again.events] == [2, 3]
    assert list(again.already_published) == [True, False]
    assert again.events[0].title == "event b", "a repeated message id returns the original"
    assert [e.message_id for e in await env.events()] == ["a", "b", "c"]


async def test_correlation_id_defaults_to_the_requests(env: EventsEnv, topic: str) -> None:
    response = await env.stub.PublishEvents(
        rpc.PublishEventsRequest(
            parent=topic_name(), events=[draft("x"), draft("y", correlation_id="mine")]
        ),
        metadata=[(CORRELATION_METADATA_KEY, "corr-123")],
    )
    assert [e.correlation_id for e in response.events] == ["corr-123", "mine"]


async def test_publishing_to_an_unknown_topic_is_not_found(env: EventsEnv) -> None:
    error = await rpc_error(env.publish([draft("a")], topic="ghost"))
    assert error.code == grpc.StatusCode.NOT_FOUND
    assert error.resource_name == topic_name("ghost")


async def test_reserve_consume_and_release(env: EventsEnv, topic: str) -> None:
    await env.publish_n(5)
    mine = await env.reserve("run-1", n=3)
    assert [e.sequence for e in mine] == [1, 2, 3]
    assert all(e.status == S.EVENT_STATUS_RESERVED and e.reserved_by == "run-1" for e in mine)
    theirs = await env.reserve("run-2", n=10)
    assert [e.sequence for e in theirs] == [4, 5], "reserved events are invisible to others"
    assert await env.reserve("run-3") == []

    consumed = await env.stub.ConsumeEvents(
        rpc.ConsumeEventsRequest(parent=topic_name(), run_id="run-1", sequences=[1, 2])
    )
    assert consumed.consumed_count == 2
    released = await env.stub.ReleaseEvents(
        rpc.ReleaseEventsRequest(parent=topic_name(), run_id="run-1")
    )
    assert released.released_count == 1
    event = await env.get_event(topic, 1)
    assert event.status == S.EVENT_STATUS_CONSUMED and event.consumed_by == "run-1"
    assert event.HasField("consume_time") and event.HasField("reserve_time")
    back = await env.get_event(topic, 3)
    assert back.status == S.EVENT_STATUS_PENDING and back.reserved_by == ""
    assert [e.sequence for e in await env.reserve("run-4")] == [3]


async def test_a_crashed_runs_reservations_can_be_released(env: EventsEnv, topic: str) -> None:
    await env.publish_n(4)
    await env.reserve("crashed-run", n=4)
    assert await env.reserve("next-run") == []
    released = await env.stub.ReleaseEvents(
        rpc.ReleaseEventsRequest(parent=topic_name(), run_id="crashed-run")
    )
    assert released.released_count == 4
    assert [e.sequence for e in await env.reserve("next-run")] == [1, 2, 3, 4]
    stats = await env.stats()
    assert (stats.pending, stats.reserved) == (0, 4)


async def test_skip_records_who_and_why(env: EventsEnv, topic: str) -> None:
    await env.publish_n(3)
    await env.reserve("run-1", n=1)
    skipped = await env.stub.SkipEvent(
        rpc.SkipEventRequest(
            name=f"{topic_name()}/events/1", skipped_by="alice@example.com", reason="duplicate"
        )
    )
    event = skipped.event
    assert event.status == S.EVENT_STATUS_SKIPPED
    assert (event.skipped_by, event.skip_reason) == ("alice@example.com", "duplicate")
    assert event.HasField("skip_time")
    assert (await env.get_event(topic, 1)) == event
    pending = await env.stub.SkipEvent(
        rpc.SkipEventRequest(name=f"{topic_name()}/events/2", skipped_by="bob", reason="bad data")
    )
    assert pending.event.status == S.EVENT_STATUS_SKIPPED
    twice = await env.stub.SkipEvent(
        rpc.SkipEventRequest(name=f"{topic_name()}/events/2", skipped_by="carol", reason="again")
    )
    assert twice.event.skipped_by == "bob", "skipping again keeps the first record"
    consumed = await env.stub.ConsumeEvents(
        rpc.ConsumeEventsRequest(parent=topic_name(), run_id="run-1")
    )
    assert consumed.consumed_count == 0, "a skipped reservation is not consumed"

    await env.reserve("run-2", n=1)
    await env.stub.ConsumeEvents(rpc.ConsumeEventsRequest(parent=topic_name(), run_id="run-2"))
    refused = await rpc_error(
        env.stub.SkipEvent(
            rpc.SkipEventRequest(name=f"{topic_name()}/events/3", skipped_by="dave", reason="x")
        )
    )
    assert refused.code == grpc.StatusCode.FAILED_PRECONDITION
    assert refused.reason == "EVENT_NOT_SKIPPABLE"
    assert (await env.get_event(topic, 3)).status == S.EVENT_STATUS_CONSUMED
    missing = await rpc_error(env.get_event(topic, 99))
    assert missing.code == grpc.StatusCode.NOT_FOUND


async def test_state_versions_and_conflicts(env: EventsEnv) -> None:
    never = await env.state()
    assert (never.name, never.version, never.HasField("data")) == (state_name(), 0, False)
    first = await env.stub.CommitState(
        rpc.CommitStateRequest(name=state_name(), expected_version=0, data=payload(b"v1"))
    )
    assert first.state.version == 1 and first.state.data.data == b"v1"
    second = await env.stub.CommitState(
        rpc.CommitStateRequest(name=state_name(), expected_version=1, data=payload(b"v2"))
    )
    assert second.state.version == 2
    for stale in (0, 1, 5):
        conflict = await rpc_error(
            env.stub.CommitState(
                rpc.CommitStateRequest(
                    name=state_name(), expected_version=stale, data=payload(b"lost")
                )
            )
        )
        assert conflict.code == grpc.StatusCode.ABORTED
        assert conflict.reason == "STATE_VERSION_CONFLICT"
        assert "version 2" in conflict.message
    now = await env.state()
    assert (now.version, now.data.data) == (2, b"v2")


async def test_concurrent_first_commits_of_a_state_store_one(env: EventsEnv) -> None:
    async def attempt(i: int) -> int:
        try:
            response = await env.stub.CommitState(
                rpc.CommitStateRequest(
                    name=state_name(), expected_version=0, data=payload(str(i).encode())
                )
            )
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.ABORTED
            return -1
        return response.state.version

    versions = await asyncio.gather(*(attempt(i) for i in range(12)))
    assert sorted(versions) == [-1] * 11 + [1]
    assert (await env.state()).version == 1


async def test_publish_wakes_listeners_of_the_topic_channel(env: EventsEnv, topic: str) -> None:
    coordination = env.service.coordination
    async with coordination.listen(["topic:test/orders"]) as listener:
        assert not await listener.wait(0)
        await env.publish([draft("a")])
        assert await listener.wait(10)
        await env.publish([draft("a")])  # a repeat publishes nothing: no wake-up
        await env.reserve("run-1")
        await env.stub.ReleaseEvents(rpc.ReleaseEventsRequest(parent=topic_name(), run_id="run-1"))
        assert await listener.wait(10), "released events are pending again"
