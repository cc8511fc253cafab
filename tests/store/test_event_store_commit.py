"""Conformance of EventStore (services/events/store/base.py), handler state and the commit:
state_get, state_commit and commit_apply, on every backend, through the Protocol alone,
with the time from a manual clock (topics and events: test_event_store.py)."""

from __future__ import annotations

from types import EllipsisType

import pytest

from conveyor_core.clock import ManualClock
from conveyor_events.domain.model import (
    CommitResult,
    Event,
    EventDraft,
    EventStatus,
    HandlerRef,
    HandlerState,
    Payload,
    StateWrite,
    Topic,
    TopicRef,
)
from conveyor_events.errors import StateVersionConflict, TopicNotFound
from conveyor_events.store.base import (
    CommitParams,
    EventListParams,
    EventStore,
    PublishParams,
    ReserveParams,
    StateCommitParams,
)

NS = "conformance"  # rebound per test (conftest's namespace fixture): a module shares one database
HANDLER = HandlerRef(NS, "billing")
IN, OUT = TopicRef(NS, "in"), TopicRef(NS, "out")
JSON = "application/json"


def names_in(ns: str) -> dict[str, object]:
    """The module names built on this test's namespace (the `namespace` fixture binds them)."""
    return {
        "HANDLER": HandlerRef(ns, "billing"),
        "IN": TopicRef(ns, "in"),
        "OUT": TopicRef(ns, "out"),
    }


def data(value: bytes) -> Payload:
    return Payload(value, JSON)


def write(expected_version: int, value: bytes, handler: HandlerRef | None = None) -> StateWrite:
    return StateWrite(handler or HANDLER, expected_version, data(value))


async def commit_state(
    store: EventStore, clock: ManualClock, expected_version: int, value: bytes
) -> HandlerState:
    return await store.state_commit(StateCommitParams(write(expected_version, value), clock.now()))


def drafts(*message_ids: str) -> tuple[EventDraft, ...]:
    return tuple(EventDraft(m, f"event {m}", data(b"{}"), "corr") for m in message_ids)


async def events_of(store: EventStore, topic: TopicRef) -> list[tuple[str, EventStatus, str]]:
    """(message id, status, consumed by) of every event of the topic, oldest first."""
    events = await store.event_list(EventListParams(topic, limit=1000))
    return [(e.message_id, e.status, e.consumed_by) for e in events]


@pytest.fixture
async def flow(event_store: EventStore, clock: ManualClock) -> list[Event]:
    """Topics `in` (three events, reserved by run-1) and `out`; the handler state at v1."""
    for ref in (IN, OUT):
        await event_store.topic_insert(Topic(NS, ref.topic, created_at=clock.now()))
    await event_store.event_publish(PublishParams(IN, drafts("i1", "i2", "i3"), clock.now()))
    reserved = await event_store.event_reserve(ReserveParams(IN, "run-1", 10, clock.now()))
    await commit_state(event_store, clock, 0, b"v1")
    clock.advance(10)
    return reserved


def commit(
    clock: ManualClock,
    run_id: str = "run-1",
    consume: tuple[TopicRef, ...] | None = None,
    publish: tuple[tuple[TopicRef, tuple[EventDraft, ...]], ...] | None = None,
    state: StateWrite | EllipsisType | None = ...,
) -> CommitParams:
    """run-1's commit of `flow` by default: consume `in`, publish o1 and o2, state v1 -> v2
    (`state=None`: no state write)."""
    return CommitParams(
        NS,
        run_id,
        (IN,) if consume is None else consume,
        ((OUT, drafts("o1", "o2")),) if publish is None else publish,
        write(1, b"v2") if isinstance(state, EllipsisType) else state,
        clock.now(),
    )


async def assert_flow_untouched(store: EventStore) -> None:
    """`flow` as it was set up: reservations held, nothing published, the state at v1."""
    held = await store.event_list(EventListParams(IN))
    assert [(e.status, e.reserved_by) for e in held] == [(EventStatus.RESERVED, "run-1")] * 3
    assert await store.event_list(EventListParams(OUT)) == []
    state = await store.state_get(HANDLER)
    assert (state.version, state.data) == (1, data(b"v1"))


# -- handler state ----------------------------------------------------------------------------


async def test_state_get_of_a_handler_never_committed_is_version_zero_without_data(
    event_store: EventStore,
) -> None:
    assert await event_store.state_get(HANDLER) == HandlerState(HANDLER, 0, None, None)


async def test_state_commit_stores_the_next_version_from_the_expected_one(
    event_store: EventStore, clock: ManualClock
) -> None:
    first = await commit_state(event_store, clock, 0, b"v1")
    assert first == HandlerState(HANDLER, 1, data(b"v1"), clock.now())
    clock.advance(5)
    second = await commit_state(event_store, clock, 1, b"v2")
    assert second == HandlerState(HANDLER, 2, data(b"v2"), clock.now())
    assert await event_store.state_get(HANDLER) == second
    other = HandlerRef(NS, "shipping")
    assert await event_store.state_get(other) == HandlerState(other), "per handler"
    elsewhere = HandlerRef(f"{NS}-b", "billing")
    assert (await event_store.state_get(elsewhere)).version == 0, "per namespace"


async def test_state_commit_at_another_version_raises_conflict_and_changes_nothing(
    event_store: EventStore, clock: ManualClock
) -> None:
    with pytest.raises(StateVersionConflict) as never:
        await commit_state(event_store, clock, 3, b"lost")
    assert (never.value.expected, never.value.current) == (3, 0)
    assert (await event_store.state_get(HANDLER)).version == 0, "no state was created"
    await commit_state(event_store, clock, 0, b"v1")
    current = await commit_state(event_store, clock, 1, b"v2")
    for stale in (0, 1, 3):
        with pytest.raises(StateVersionConflict) as conflict:
            await commit_state(event_store, clock, stale, b"lost")
        assert (conflict.value.expected, conflict.value.current) == (stale, 2)
    assert await event_store.state_get(HANDLER) == current


# -- commit -----------------------------------------------------------------------------------


async def test_commit_consumes_publishes_and_stores_state_together(
    event_store: EventStore, clock: ManualClock, flow: list[Event]
) -> None:
    result = await event_store.commit_apply(commit(clock))
    assert result.consumed_count == 3 and not result.replayed
    assert [(e.topic, e.sequence, e.message_id) for e in result.published] == [
        ("out", 1, "o1"),
        ("out", 2, "o2"),
    ]
    assert {e.published_at for e in result.published} == {clock.now()}
    assert [await event_store.event_get(e.ref) for e in result.published] == list(
        result.published
    ), "the events as stored"
    assert result.state == HandlerState(HANDLER, 2, data(b"v2"), clock.now())
    assert await event_store.state_get(HANDLER) == result.state
    assert await events_of(event_store, IN) == [
        (e.message_id, EventStatus.CONSUMED, "run-1") for e in flow
    ]
    consumed = await event_store.event_get(flow[0].ref)
    assert consumed.consumed_at == clock.now()


async def test_commit_consumes_only_the_runs_reservations_in_the_topics_it_names(
    event_store: EventStore, clock: ManualClock, flow: list[Event]
) -> None:
    await event_store.event_publish(PublishParams(IN, drafts("i4", "i5"), clock.now()))
    await event_store.event_reserve(ReserveParams(IN, "run-2", 1, clock.now()))
    await event_store.event_publish(PublishParams(OUT, drafts("o0"), clock.now()))
    await event_store.event_reserve(ReserveParams(OUT, "run-1", 1, clock.now()))
    result = await event_store.commit_apply(commit(clock, publish=(), state=None))
    assert result.consumed_count == 3
    assert (result.published, result.state) == ((), None)
    assert [status for _, status, _ in await events_of(event_store, IN)] == [
        EventStatus.CONSUMED,
        EventStatus.CONSUMED,
        EventStatus.CONSUMED,
        EventStatus.RESERVED,  # run-2's
        EventStatus.PENDING,
    ]
    assert await events_of(event_store, OUT) == [("o0", EventStatus.RESERVED, "")], "not named"
    assert (await event_store.state_get(HANDLER)).version == 1, "no state write, no change"


async def test_a_producer_commit_publishes_to_several_topics_in_request_order(
    event_store: EventStore, clock: ManualClock, flow: list[Event]
) -> None:
    publish = ((OUT, drafts("a", "b")), (IN, drafts("c")), (OUT, drafts("d", "a")))
    result = await event_store.commit_apply(
        commit(clock, "producer-1", consume=(), publish=publish, state=None)
    )
    assert result.consumed_count == 0
    assert [(e.topic, e.sequence, e.message_id) for e in result.published] == [
        ("out", 1, "a"),
        ("out", 2, "b"),
        ("in", 4, "c"),
        ("out", 3, "d"),
        ("out", 1, "a"),  # a message id published before returns the original
    ]
    assert [m for m, _, _ in await events_of(event_store, OUT)] == ["a", "b", "d"]


async def test_a_repeated_commit_replays_the_first_result_and_changes_nothing(
    event_store: EventStore, clock: ManualClock, flow: list[Event]
) -> None:
    first = await event_store.commit_apply(commit(clock))
    clock.advance(30)
    # A retry after a lost reply; even a changed request replays the first result.
    changed = commit(clock, publish=((OUT, drafts("o3")),), state=write(7, b"v9"))
    again = await event_store.commit_apply(changed)
    assert again == CommitResult(first.consumed_count, first.published, first.state, True)
    assert [m for m, _, _ in await events_of(event_store, OUT)] == ["o1", "o2"]
    # The state moves on; the replay still answers with the state this run wrote.
    await event_store.state_commit(StateCommitParams(write(2, b"v3"), clock.now()))
    assert (await event_store.commit_apply(commit(clock))).state == first.state
    assert (await event_store.state_get(HANDLER)).version == 3


async def test_run_ids_are_per_namespace(event_store: EventStore, clock: ManualClock) -> None:
    elsewhere = HandlerRef(f"{NS}-b", "billing")
    ours = await event_store.commit_apply(
        CommitParams(NS, "run-1", (), (), write(0, b"ours"), clock.now())
    )
    theirs = await event_store.commit_apply(
        CommitParams(
            elsewhere.namespace, "run-1", (), (), write(0, b"theirs", elsewhere), clock.now()
        )
    )
    assert not ours.replayed and not theirs.replayed
    assert (await event_store.state_get(elsewhere)).data == data(b"theirs")


async def test_a_commit_failing_on_its_state_version_changes_nothing_and_can_be_retried(
    event_store: EventStore, clock: ManualClock, flow: list[Event]
) -> None:
    with pytest.raises(StateVersionConflict) as conflict:
        await event_store.commit_apply(commit(clock, state=write(0, b"v2")))
    assert (conflict.value.expected, conflict.value.current) == (0, 1)
    await assert_flow_untouched(event_store)
    retried = await event_store.commit_apply(commit(clock))
    assert not retried.replayed, "a failed commit records no result to replay"
    assert retried.consumed_count == 3 and retried.state is not None
    assert [e.sequence for e in retried.published] == [1, 2], "the failed one's handed back"


async def test_a_commit_naming_an_unknown_topic_raises_not_found_and_changes_nothing(
    event_store: EventStore, clock: ManualClock, flow: list[Event]
) -> None:
    ghost = TopicRef(NS, "zz-ghost")  # last in name order: `out` is published first
    with pytest.raises(TopicNotFound) as publishing:
        await event_store.commit_apply(
            commit(clock, publish=((OUT, drafts("o1")), (ghost, drafts("x"))))
        )
    assert publishing.value.resource_name == ghost.name
    await assert_flow_untouched(event_store)
    with pytest.raises(TopicNotFound) as consuming:
        await event_store.commit_apply(commit(clock, consume=(IN, TopicRef(NS, "ghost"))))
    assert consuming.value.resource_name == TopicRef(NS, "ghost").name
    await assert_flow_untouched(event_store)
    assert not (await event_store.commit_apply(commit(clock))).replayed
