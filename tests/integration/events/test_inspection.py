"""What people browse: topic stats, stale events (with a manual clock), paged listings."""

from __future__ import annotations

from datetime import timedelta

import grpc
import pytest

from conveyor.events.v1 import service_pb2 as rpc
from conveyor_core.settings import CoreSettings
from conveyor_events.settings import EventStoreSettings
from tests.helpers.events import (
    EventsEnv,
    S,
    draft,
    namespace_name,
    rpc_error,
    seconds,
    topic_name,
)

DAY = 24 * 3600.0


async def _stale(env: EventsEnv, **fields) -> list[str]:  # type: ignore[no-untyped-def]
    """Names of the stale events, following page tokens."""
    names, token = [], ""
    while True:
        page = await env.stub.ListStaleEvents(
            rpc.ListStaleEventsRequest(parent=namespace_name(), page_token=token, **fields)
        )
        names += [e.name for e in page.events]
        token = page.next_page_token
        if not token:
            return names


async def test_stale_events_follow_the_clock(env: EventsEnv) -> None:
    await env.create_topic("a")
    await env.create_topic("b")
    started = env.clock.now()
    await env.publish_n(3, topic="a")
    env.clock.advance(3 * DAY)
    await env.publish_n(1, topic="b")
    assert await _stale(env) == []
    env.clock.advance(4 * DAY + 1)  # a's events are 7 days + 1s old, b's 4 days + 1s
    a = [f"{topic_name('a')}/events/{n}" for n in (1, 2, 3)]
    assert await _stale(env) == a
    assert await _stale(env, page_size=1) == a
    await env.reserve("run-1", n=1, topic="a")  # a reserved event is not waiting
    assert await _stale(env) == a[1:]
    everything = await _stale(env, older_than=seconds(DAY))
    assert everything == [*a[1:], f"{topic_name('b')}/events/1"]

    stats = await env.stats("a")
    assert (stats.pending, stats.reserved, stats.stale) == (2, 1, 2)
    assert stats.oldest_pending_publish_time.ToDatetime() == started.replace(tzinfo=None)
    assert (await env.stats("b")).stale == 0
    other = await env.stub.ListStaleEvents(rpc.ListStaleEventsRequest(parent="namespaces/other"))
    assert list(other.events) == []


async def test_the_stale_threshold_is_a_setting(core: CoreSettings) -> None:
    env = await EventsEnv(core, settings=EventStoreSettings(stale_after_seconds=60)).start()
    try:
        await env.create_topic("a")
        await env.publish_n(2, topic="a")
        env.clock.advance(timedelta(seconds=61))
        assert len(await _stale(env)) == 2
        assert (await env.stats("a")).stale == 2
    finally:
        await env.stop()


async def test_topic_stats_count_every_status(env: EventsEnv, topic: str) -> None:
    empty = await env.stats()
    assert (empty.pending, empty.stale) == (0, 0)
    assert not empty.HasField("oldest_pending_publish_time")
    await env.publish_n(6)
    await env.reserve("run-1", n=3)
    await env.stub.ConsumeEvents(
        rpc.ConsumeEventsRequest(parent=topic_name(), run_id="run-1", sequences=[1])
    )
    await env.stub.SkipEvent(
        rpc.SkipEventRequest(name=f"{topic_name()}/events/6", skipped_by="ops", reason="test")
    )
    stats = await env.stats()
    assert stats.topic == topic_name()
    assert (stats.pending, stats.reserved, stats.consumed, stats.skipped) == (2, 2, 1, 1)


async def test_events_page_oldest_or_newest_first_with_status_filters(
    env: EventsEnv, topic: str
) -> None:
    await env.publish_n(7)
    pages, token = [], ""
    while True:
        page = await env.stub.ListEvents(
            rpc.ListEventsRequest(parent=topic_name(), page_size=3, page_token=token)
        )
        pages.append([e.sequence for e in page.events])
        token = page.next_page_token
        if not token:
            break
    assert pages == [[1, 2, 3], [4, 5, 6], [7]]
    newest = await env.stub.ListEvents(
        rpc.ListEventsRequest(parent=topic_name(), order=rpc.EVENT_ORDER_NEWEST_FIRST, page_size=3)
    )
    assert [e.sequence for e in newest.events] == [7, 6, 5]
    second = await env.stub.ListEvents(
        rpc.ListEventsRequest(
            parent=topic_name(),
            order=rpc.EVENT_ORDER_NEWEST_FIRST,
            page_size=3,
            page_token=newest.next_page_token,
        )
    )
    assert [e.sequence for e in second.events] == [4, 3, 2]
    await env.reserve("run-1", n=2)
    reserved = await env.events(statuses=[S.EVENT_STATUS_RESERVED])
    assert [e.sequence for e in reserved] == [1, 2]
    both = await env.events(statuses=[S.EVENT_STATUS_RESERVED, S.EVENT_STATUS_PENDING])
    assert len(both) == 7


async def test_topics_page(env: EventsEnv) -> None:
    for name in ("e", "d", "c", "b", "a"):
        await env.create_topic(name, workflow="wf" if name in "ace" else "")
    pages, token = [], ""
    while True:
        page = await env.stub.ListTopics(
            rpc.ListTopicsRequest(parent=namespace_name(), page_size=2, page_token=token)
        )
        pages.append([t.topic_id for t in page.topics])
        token = page.next_page_token
        if not token:
            break
    assert pages == [["a", "b"], ["c", "d"], ["e"]]
    wf = await env.stub.ListTopics(
        rpc.ListTopicsRequest(parent=namespace_name(), workflow="wf", page_size=2)
    )
    assert [t.topic_id for t in wf.topics] == ["a", "c"] and wf.next_page_token


@pytest.mark.parametrize(
    "tamper", ["flip", "garbage", "other-status", "other-order", "other-topic"]
)
async def test_event_page_token_tampering_is_invalid_argument(
    env: EventsEnv, topic: str, tamper: str
) -> None:
    await env.create_topic("other")
    await env.publish_n(3)
    first = await env.stub.ListEvents(rpc.ListEventsRequest(parent=topic_name(), page_size=1))
    token = first.next_page_token
    request = rpc.ListEventsRequest(parent=topic_name(), page_size=1, page_token=token)
    if tamper == "flip":
        request.page_token = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    elif tamper == "garbage":
        request.page_token = "not a token!"
    elif tamper == "other-status":
        request.statuses.append(S.EVENT_STATUS_PENDING)
    elif tamper == "other-order":
        request.order = rpc.EVENT_ORDER_NEWEST_FIRST
    else:
        request.parent = topic_name("other")
    error = await rpc_error(env.stub.ListEvents(request))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in error.field_violations] == ["page_token"]


@pytest.mark.parametrize("listing", ["topics", "stale"])
async def test_other_page_tokens_are_bound_to_their_filters(env: EventsEnv, listing: str) -> None:
    for name in ("a", "b", "c"):
        await env.create_topic(name)
        await env.publish([draft("x")], topic=name)
    env.clock.advance(8 * DAY)
    if listing == "topics":
        page = await env.stub.ListTopics(
            rpc.ListTopicsRequest(parent=namespace_name(), page_size=1)
        )
        call = env.stub.ListTopics(
            rpc.ListTopicsRequest(
                parent=namespace_name(), workflow="wf", page_token=page.next_page_token
            )
        )
    else:
        page = await env.stub.ListStaleEvents(
            rpc.ListStaleEventsRequest(parent=namespace_name(), page_size=1)
        )
        call = env.stub.ListStaleEvents(
            rpc.ListStaleEventsRequest(
                parent=namespace_name(),
                older_than=seconds(DAY),
                page_token=page.next_page_token,
            )
        )
    assert page.next_page_token
    error = await rpc_error(call)
    assert [f for f, _ in error.field_violations] == ["page_token"]
