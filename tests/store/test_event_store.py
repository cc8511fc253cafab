"""Conformance of EventStore (services/events/store/base.py), topics and events: every method
but the handler state and the commit (test_event_store_commit.py), on every backend, through
the Protocol alone, with the time from a manual clock."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from conveyor_core.clock import ManualClock, to_micros
from conveyor_events.domain.model import (
    Event,
    EventDraft,
    EventRef,
    EventStatus,
    Payload,
    Topic,
    TopicRef,
)
from conveyor_events.errors import (
    EventNotFound,
    EventNotSkippable,
    TopicAlreadyExists,
    TopicNotFound,
)
from conveyor_events.store.base import (
    EventListParams,
    EventStore,
    PublishParams,
    ReserveParams,
    RunEventsParams,
    SkipParams,
    StaleCursor,
    StaleListParams,
    TopicListParams,
)

NS = "conformance"  # rebound per test (conftest's namespace fixture): a module shares one database
ORDERS = TopicRef(NS, "orders")
JSON = "application/json"


def names_in(ns: str) -> dict[str, object]:
    """The module names built on this test's namespace (the `namespace` fixture binds them)."""
    return {"ORDERS": TopicRef(ns, "orders")}


def draft(message_id: str, title: str = "", data: bytes = b"{}") -> EventDraft:
    return EventDraft(message_id, title or f"event {message_id}", Payload(data, JSON), "corr")


async def create(
    store: EventStore, clock: ManualClock, name: str = "orders", workflow: str = ""
) -> TopicRef:
    topic = await store.topic_insert(Topic(NS, name, workflow, f"{name} topic", clock.now()))
    return topic.ref


async def publish(
    store: EventStore, clock: ManualClock, *message_ids: str, topic: TopicRef | None = None
) -> list[Event]:
    drafts = tuple(draft(m) for m in message_ids)
    published = await store.event_publish(PublishParams(topic or ORDERS, drafts, clock.now()))
    return [p.event for p in published]


async def reserve(
    store: EventStore, clock: ManualClock, run: str, limit: int = 10, topic: TopicRef | None = None
) -> list[Event]:
    return await store.event_reserve(ReserveParams(topic or ORDERS, run, limit, clock.now()))


def of_run(
    clock: ManualClock, run: str, *sequences: int, topic: TopicRef | None = None
) -> RunEventsParams:
    return RunEventsParams(topic or ORDERS, run, sequences, clock.now())


async def statuses(store: EventStore, topic: TopicRef | None = None) -> list[tuple[int, str]]:
    """(sequence, status) of every event of the topic, oldest first."""
    events = await store.event_list(EventListParams(topic or ORDERS, limit=1000))
    return [(e.sequence, e.status.value) for e in events]


def skip(clock: ManualClock, sequence: int, by: str = "alice", reason: str = "dup") -> SkipParams:
    return SkipParams(EventRef(NS, "orders", sequence), by, reason, clock.now())


# -- topics -------------------------------------------------------------------------------


async def test_topic_insert_stores_a_topic_once_per_namespace_and_name(
    event_store: EventStore, clock: ManualClock
) -> None:
    topic = Topic(NS, "orders", "shop", "orders placed", clock.now())
    assert await event_store.topic_insert(topic) == topic
    assert await event_store.topic_get(ORDERS) == topic
    with pytest.raises(TopicAlreadyExists):
        await event_store.topic_insert(Topic(NS, "orders", "other", "again", clock.now()))
    assert await event_store.topic_get(ORDERS) == topic, "the refused insert changed nothing"
    elsewhere = Topic(f"{NS}-b", "orders", created_at=clock.now())
    assert await event_store.topic_insert(elsewhere) == elsewhere


async def test_topic_get_of_an_unknown_topic_raises_not_found(
    event_store: EventStore, clock: ManualClock
) -> None:
    await event_store.topic_insert(Topic(f"{NS}-b", "orders", created_at=clock.now()))
    with pytest.raises(TopicNotFound) as raised:
        await event_store.topic_get(ORDERS)  # the same name in another namespace is not it
    assert raised.value.resource_name == ORDERS.name


async def test_topic_list_orders_by_name_pages_after_a_name_and_filters_by_workflow(
    event_store: EventStore, clock: ManualClock
) -> None:
    for name in ("e", "d", "c", "b", "a"):
        await create(event_store, clock, name, workflow="wf" if name in "ace" else "")
    await event_store.topic_insert(Topic(f"{NS}-b", "a0", created_at=clock.now()))

    async def names(workflow: str | None = None, after: str = "", limit: int = 50) -> list[str]:
        topics = await event_store.topic_list(TopicListParams(NS, workflow, after, limit))
        return [t.topic for t in topics]

    assert await names() == ["a", "b", "c", "d", "e"]
    assert await names(limit=2) == ["a", "b"]
    assert await names(after="b", limit=2) == ["c", "d"]
    assert await names(after="d", limit=2) == ["e"]
    assert await names(workflow="wf") == ["a", "c", "e"]
    assert await names(workflow="wf", after="a", limit=1) == ["c"]
    assert await names(workflow="") == ["b", "d"]
    assert await event_store.topic_list(TopicListParams(f"{NS}-none")) == []


async def test_topic_stats_count_each_status_the_oldest_pending_and_the_stale(
    event_store: EventStore, clock: ManualClock
) -> None:
    await create(event_store, clock)
    started = clock.now()
    await publish(event_store, clock, "a", "b", "c")
    clock.advance(60)
    await publish(event_store, clock, "d", "e", "f")
    await reserve(event_store, clock, "run-1", limit=3)  # a, b, c
    await event_store.event_consume(of_run(clock, "run-1", 1))
    await event_store.event_skip(skip(clock, 6))
    stats = await event_store.topic_stats(ORDERS, stale_before=started + timedelta(seconds=1))
    assert stats.topic == ORDERS
    assert stats.counts == {
        EventStatus.PENDING: 2,
        EventStatus.RESERVED: 2,
        EventStatus.CONSUMED: 1,
        EventStatus.SKIPPED: 1,
    }
    # a, b, c are reserved or consumed: the oldest pending are d and e, published later.
    assert stats.oldest_pending_at == clock.now() and stats.stale == 0
    await event_store.event_release(of_run(clock, "run-1"))  # b and c wait again
    stats = await event_store.topic_stats(ORDERS, stale_before=started + timedelta(seconds=1))
    assert stats.oldest_pending_at == started and stats.stale == 2
    later = await event_store.topic_stats(ORDERS, stale_before=clock.now() + timedelta(seconds=1))
    assert later.stale == 4
    assert (await event_store.topic_stats(ORDERS, stale_before=started)).stale == 0  # strictly


async def test_topic_stats_of_an_empty_topic_are_zero_and_of_an_unknown_one_not_found(
    event_store: EventStore, clock: ManualClock
) -> None:
    await create(event_store, clock)
    empty = await event_store.topic_stats(ORDERS, clock.now())
    assert (empty.counts, empty.oldest_pending_at, empty.stale) == ({}, None, 0)
    with pytest.raises(TopicNotFound):
        await event_store.topic_stats(TopicRef(NS, "ghost"), clock.now())


# -- publish --------------------------------------------------------------------------------


async def test_publish_gives_new_message_ids_the_next_sequences_in_batch_order(
    event_store: EventStore, clock: ManualClock
) -> None:
    await create(event_store, clock)
    batch = (draft("a", data=b'{"n": 1}'), draft("b"), draft("c"))
    published = await event_store.event_publish(PublishParams(ORDERS, batch, clock.now()))
    assert [(p.event.sequence, p.already_published) for p in published] == [
        (1, False),
        (2, False),
        (3, False),
    ]
    first = published[0].event
    assert (first.message_id, first.title, first.correlation_id) == ("a", "event a", "corr")
    assert first.payload == Payload(b'{"n": 1}', JSON)
    assert first.status is EventStatus.PENDING and first.published_at == clock.now()
    assert [await event_store.event_get(p.event.ref) for p in published] == [
        p.event for p in published
    ], "publish returns the events as stored"
    clock.advance(1)
    [fourth] = await publish(event_store, clock, "d")
    assert fourth.sequence == 4 and fourth.published_at == clock.now()


async def test_publish_of_a_message_id_seen_before_returns_the_original_and_leaves_no_gap(
    event_store: EventStore, clock: ManualClock
) -> None:
    await create(event_store, clock)
    first = await event_store.event_publish(
        PublishParams(ORDERS, (draft("a"), draft("b"), draft("a", "repeat")), clock.now())
    )
    assert [(p.event.sequence, p.already_published) for p in first] == [
        (1, False),
        (2, False),
        (1, True),
    ], "a repeat within the batch refers to its first occurrence"
    assert first[2].event == first[0].event
    clock.advance(5)
    again = await event_store.event_publish(
        PublishParams(ORDERS, (draft("b", "changed", b"[]"), draft("c")), clock.now())
    )
    assert [(p.event.sequence, p.already_published) for p in again] == [(2, True), (3, False)]
    assert again[0].event == first[1].event, "the original, not the new draft"
    everything = await event_store.event_list(EventListParams(ORDERS))
    assert [(e.sequence, e.message_id) for e in everything] == [(1, "a"), (2, "b"), (3, "c")]
    only_old = await event_store.event_publish(PublishParams(ORDERS, (draft("c"),), clock.now()))
    assert only_old[0].already_published
    assert [e.sequence for e in await publish(event_store, clock, "d")] == [4]


async def test_publish_to_an_unknown_topic_raises_not_found_and_stores_nothing(
    event_store: EventStore, clock: ManualClock
) -> None:
    await event_store.topic_insert(Topic(f"{NS}-b", "orders", created_at=clock.now()))
    with pytest.raises(TopicNotFound):
        await publish(event_store, clock, "a")
    await create(event_store, clock)
    assert await statuses(event_store) == []
    assert [e.sequence for e in await publish(event_store, clock, "a")] == [1]


# -- reserve, release, consume, skip ---------------------------------------------------------


async def test_reserve_takes_the_oldest_pending_events_up_to_the_limit(
    event_store: EventStore, clock: ManualClock
) -> None:
    await create(event_store, clock)
    await publish(event_store, clock, "a", "b", "c", "d", "e", "f")
    await event_store.event_skip(skip(clock, 2))
    clock.advance(3)
    mine = await reserve(event_store, clock, "run-1", limit=3)
    assert [e.sequence for e in mine] == [1, 3, 4], "oldest first, the skipped passed over"
    assert {(e.status, e.reserved_by, e.reserved_at) for e in mine} == {
        (EventStatus.RESERVED, "run-1", clock.now())
    }
    assert await event_store.event_get(mine[0].ref) == mine[0]
    theirs = await reserve(event_store, clock, "run-2", limit=10)
    assert [e.sequence for e in theirs] == [5, 6], "reserved events are not handed out again"
    assert await reserve(event_store, clock, "run-3") == []


async def test_reserve_on_an_unknown_topic_raises_not_found(
    event_store: EventStore, clock: ManualClock
) -> None:
    await create(event_store, clock)
    assert await reserve(event_store, clock, "run-1") == [], "an empty topic holds nothing"
    with pytest.raises(TopicNotFound):
        await reserve(event_store, clock, "run-1", topic=TopicRef(NS, "ghost"))


async def test_concurrent_reservers_never_share_an_event(
    event_store: EventStore, clock: ManualClock
) -> None:
    await create(event_store, clock)
    await publish(event_store, clock, *(f"m{i}" for i in range(24)))
    batches = await asyncio.gather(
        *(reserve(event_store, clock, f"run-{i}", limit=4) for i in range(8))
    )
    sequences = [e.sequence for batch in batches for e in batch]
    assert sorted(sequences) == list(range(1, 25)), "each event reserved once, none lost"
    for i, batch in enumerate(batches):
        assert {e.reserved_by for e in batch} <= {f"run-{i}"}


async def test_release_returns_a_failed_runs_reservations_to_pending(
    event_store: EventStore, clock: ManualClock
) -> None:
    await create(event_store, clock)
    await publish(event_store, clock, "a", "b", "c", "d", "e")
    await reserve(event_store, clock, "failed-run", limit=3)
    await reserve(event_store, clock, "other-run", limit=1)
    await event_store.event_consume(of_run(clock, "failed-run", 1))
    assert await event_store.event_release(of_run(clock, "failed-run")) == 2
    back = await event_store.event_get(EventRef(NS, "orders", 2))
    assert (back.status, back.reserved_by, back.reserved_at) == (EventStatus.PENDING, "", None)
    assert await statuses(event_store) == [
        (1, "CONSUMED"),
        (2, "PENDING"),
        (3, "PENDING"),
        (4, "RESERVED"),
        (5, "PENDING"),
    ], "another run's reservation and a consumed event stay as they were"
    assert [e.sequence for e in await reserve(event_store, clock, "next-run")] == [2, 3, 5]
    assert await event_store.event_release(of_run(clock, "failed-run")) == 0


async def test_release_of_chosen_sequences_only_and_on_an_unknown_topic(
    event_store: EventStore, clock: ManualClock
) -> None:
    await create(event_store, clock)
    await publish(event_store, clock, "a", "b", "c")
    await reserve(event_store, clock, "run-1")
    assert await event_store.event_release(of_run(clock, "run-1", 2, 3)) == 2
    assert await event_store.event_release(of_run(clock, "run-2", 1)) == 0, "not run-2's"
    assert await statuses(event_store) == [(1, "RESERVED"), (2, "PENDING"), (3, "PENDING")]
    with pytest.raises(TopicNotFound):
        await event_store.event_release(of_run(clock, "run-1", topic=TopicRef(NS, "ghost")))


async def test_consume_marks_the_runs_reservations_consumed(
    event_store: EventStore, clock: ManualClock
) -> None:
    await create(event_store, clock)
    await publish(event_store, clock, "a", "b", "c", "d", "e")
    await reserve(event_store, clock, "run-1", limit=3)
    await reserve(event_store, clock, "run-2", limit=1)
    clock.advance(2)
    assert await event_store.event_consume(of_run(clock, "run-1", 1, 4)) == 1, "4 is run-2's"
    consumed = await event_store.event_get(EventRef(NS, "orders", 1))
    assert (consumed.status, consumed.consumed_by) == (EventStatus.CONSUMED, "run-1")
    assert consumed.consumed_at == clock.now() and consumed.reserved_by == "run-1"
    assert await event_store.event_consume(of_run(clock, "run-1")) == 2, "the rest of run-1's"
    assert await statuses(event_store) == [
        (1, "CONSUMED"),
        (2, "CONSUMED"),
        (3, "CONSUMED"),
        (4, "RESERVED"),
        (5, "PENDING"),
    ]


async def test_consume_again_counts_nothing_and_on_an_unknown_topic_raises_not_found(
    event_store: EventStore, clock: ManualClock
) -> None:
    await create(event_store, clock)
    await publish(event_store, clock, "a")
    assert await event_store.event_consume(of_run(clock, "run-1")) == 0, "a pending event"
    await reserve(event_store, clock, "run-1")
    assert await event_store.event_consume(of_run(clock, "run-1")) == 1
    assert await event_store.event_consume(of_run(clock, "run-1")) == 0
    with pytest.raises(TopicNotFound):
        await event_store.event_consume(of_run(clock, "run-1", topic=TopicRef(NS, "ghost")))


async def test_skip_records_who_why_and_when_for_a_pending_or_reserved_event(
    event_store: EventStore, clock: ManualClock
) -> None:
    await create(event_store, clock)
    await publish(event_store, clock, "a", "b")
    await reserve(event_store, clock, "run-1", limit=1)
    clock.advance(4)
    reserved = await event_store.event_skip(skip(clock, 1, "alice", "duplicate"))
    assert (reserved.status, reserved.skipped_by, reserved.skip_reason) == (
        EventStatus.SKIPPED,
        "alice",
        "duplicate",
    )
    assert reserved.skipped_at == clock.now()
    assert await event_store.event_get(reserved.ref) == reserved
    pending = await event_store.event_skip(skip(clock, 2, "bob", "bad data"))
    assert pending.status is EventStatus.SKIPPED
    assert await event_store.event_consume(of_run(clock, "run-1")) == 0, "skipped, not consumed"
    assert await reserve(event_store, clock, "run-2") == []


async def test_skip_twice_keeps_the_first_and_a_consumed_event_is_not_skippable(
    event_store: EventStore, clock: ManualClock
) -> None:
    await create(event_store, clock)
    await publish(event_store, clock, "a", "b")
    first = await event_store.event_skip(skip(clock, 1, "bob", "bad data"))
    clock.advance(1)
    assert await event_store.event_skip(skip(clock, 1, "carol", "again")) == first
    await reserve(event_store, clock, "run-1")
    await event_store.event_consume(of_run(clock, "run-1"))
    with pytest.raises(EventNotSkippable):
        await event_store.event_skip(skip(clock, 2))
    assert (await event_store.event_get(EventRef(NS, "orders", 2))).status is EventStatus.CONSUMED
    with pytest.raises(EventNotFound):
        await event_store.event_skip(skip(clock, 99))


# -- reads ------------------------------------------------------------------------------------


async def test_event_get_of_an_unknown_event_raises_not_found(
    event_store: EventStore, clock: ManualClock
) -> None:
    await create(event_store, clock)
    [event] = await publish(event_store, clock, "a")
    assert await event_store.event_get(EventRef(NS, "orders", 1)) == event
    for missing in (
        EventRef(NS, "orders", 2),
        EventRef(NS, "ghost", 1),
        EventRef(f"{NS}-b", "orders", 1),
    ):
        with pytest.raises(EventNotFound) as raised:
            await event_store.event_get(missing)
        assert raised.value.resource_name == missing.name


async def test_event_list_pages_oldest_or_newest_first_after_a_sequence(
    event_store: EventStore, clock: ManualClock
) -> None:
    await create(event_store, clock)
    await publish(event_store, clock, *"abcdefg")

    async def page(
        after_sequence: int | None = None, limit: int = 50, newest_first: bool = False
    ) -> list[int]:
        params = EventListParams(ORDERS, (), after_sequence, limit, newest_first)
        events = await event_store.event_list(params)
        return [e.sequence for e in events]

    assert await page() == [1, 2, 3, 4, 5, 6, 7]
    assert await page(limit=3) == [1, 2, 3]
    assert await page(limit=3, after_sequence=3) == [4, 5, 6]
    assert await page(limit=3, after_sequence=6) == [7]
    assert await page(after_sequence=7) == []
    assert await page(limit=3, newest_first=True) == [7, 6, 5]
    assert await page(limit=3, newest_first=True, after_sequence=5) == [4, 3, 2]
    assert await page(newest_first=True, after_sequence=1) == []


async def test_event_list_filters_by_status_and_on_an_unknown_topic_raises_not_found(
    event_store: EventStore, clock: ManualClock
) -> None:
    await create(event_store, clock)
    assert await event_store.event_list(EventListParams(ORDERS)) == []
    await publish(event_store, clock, *"abcde")
    await reserve(event_store, clock, "run-1", limit=2)
    await event_store.event_skip(skip(clock, 5))

    async def having(*wanted: EventStatus) -> list[int]:
        events = await event_store.event_list(EventListParams(ORDERS, statuses=wanted))
        return [e.sequence for e in events]

    assert await having(EventStatus.RESERVED) == [1, 2]
    assert await having(EventStatus.PENDING, EventStatus.SKIPPED) == [3, 4, 5]
    assert await having(EventStatus.CONSUMED) == []
    with pytest.raises(TopicNotFound):
        await event_store.event_list(EventListParams(TopicRef(NS, "ghost")))


async def test_list_stale_holds_pending_events_published_before_the_threshold(
    event_store: EventStore, clock: ManualClock
) -> None:
    await create(event_store, clock)
    old = await publish(event_store, clock, "a", "b")
    clock.advance(timedelta(days=3))
    await publish(event_store, clock, "c")

    async def stale(older_than: timedelta) -> list[str]:
        events = await event_store.event_list_stale(StaleListParams(NS, clock.now() - older_than))
        return [e.message_id for e in events]

    assert await stale(timedelta(days=7)) == []
    clock.advance(timedelta(days=4))  # a, b are 7 days old, c 4 days
    assert await stale(timedelta(days=7)) == [], "published exactly at the threshold: not before"
    clock.advance(1)
    assert await stale(timedelta(days=7)) == ["a", "b"]
    assert await stale(timedelta(days=1)) == ["a", "b", "c"]
    await reserve(event_store, clock, "run-1", limit=1)
    assert await stale(timedelta(days=7)) == ["b"], "a reserved event is not waiting"
    await event_store.event_release(of_run(clock, "run-1"))
    assert await stale(timedelta(days=7)) == ["a", "b"], "released, it waits since it was published"
    await event_store.event_skip(skip(clock, old[1].sequence))
    assert await stale(timedelta(days=7)) == ["a"]
    empty = StaleListParams(f"{NS}-none", clock.now())
    assert await event_store.event_list_stale(empty) == []


async def test_list_stale_pages_by_publish_time_topic_and_sequence(
    event_store: EventStore, clock: ManualClock
) -> None:
    a, b = await create(event_store, clock, "a"), await create(event_store, clock, "b")
    elsewhere = await event_store.topic_insert(Topic(f"{NS}-b", "a", created_at=clock.now()))
    await publish(event_store, clock, "x1", topic=elsewhere.ref)  # another namespace's
    await publish(event_store, clock, "b1", "b2", topic=b)
    await publish(event_store, clock, "a1", topic=a)  # the same instant: topic a comes first
    clock.advance(1)
    await publish(event_store, clock, "a2", topic=a)
    clock.advance(1)
    before = clock.now()
    expected = ["a1", "b1", "b2", "a2"]
    assert [
        e.message_id for e in await event_store.event_list_stale(StaleListParams(NS, before))
    ] == expected

    seen: list[str] = []
    after: StaleCursor | None = None
    while True:
        page = await event_store.event_list_stale(StaleListParams(NS, before, after, limit=2))
        seen += [e.message_id for e in page]
        if len(page) < 2:
            break
        last = page[-1]
        after = StaleCursor(to_micros(last.published_at), last.topic, last.sequence)
    assert seen == expected, "the cursor crosses topics at one instant and instants in a topic"
