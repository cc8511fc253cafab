"""Commit: consume, publish and store state in ONE transaction, all or nothing, once per run."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

import grpc
import pytest
from sqlalchemy import event

from conveyor.events.v1 import service_pb2 as rpc
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


@pytest.fixture
async def flow(env: EventsEnv) -> EventsEnv:
    """Topics `in` (3 events reserved by run-1) and `out`, and a handler state at version 1."""
    await env.create_topic("in")
    await env.create_topic("out")
    await env.publish_n(3, topic="in")
    assert len(await env.reserve("run-1", n=3, topic="in")) == 3
    await env.stub.CommitState(
        rpc.CommitStateRequest(name=state_name(), expected_version=0, data=payload(b"v1"))
    )
    return env


def _commit(
    run_id: str = "run-1",
    expected_version: int = 1,
    publish: dict[str, list[str]] | None = None,
    consume: tuple[str, ...] = ("in",),
) -> rpc.CommitRequest:
    publish = {"out": ["o1", "o2"]} if publish is None else publish
    return rpc.CommitRequest(
        parent=namespace_name(),
        run_id=run_id,
        consume_topics=[topic_name(t) for t in consume],
        publish=[
            rpc.TopicEvents(topic=topic_name(t), events=[draft(m) for m in ids])
            for t, ids in publish.items()
        ],
        state=rpc.StateWrite(
            name=state_name(), expected_version=expected_version, data=payload(b"v2")
        ),
    )


@contextmanager
def _statements(env: EventsEnv) -> Iterator[list[str]]:
    """The SQL the service runs while the block runs (to show how far a transaction got)."""
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        seen.append(" ".join(statement.split()))

    engine = env.service.engine_db.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


async def _assert_nothing_committed(env: EventsEnv) -> None:
    """The state of `flow`, untouched: reservations held, nothing published, state at v1."""
    held = await env.events("in")
    assert [(e.status, e.reserved_by) for e in held] == [(S.EVENT_STATUS_RESERVED, "run-1")] * 3
    assert await env.events("out") == []
    state = await env.state()
    assert (state.version, state.data.data) == (1, b"v1")
    later = await env.publish([draft("later")], topic="out")
    assert later.events[0].sequence == 1, "the failed commit's sequences were handed back"


async def test_commit_consumes_publishes_and_stores_state(flow: EventsEnv) -> None:
    env = flow
    await env.reserve("run-2", n=1, topic="in")  # nothing left: run-1 holds all three
    response = await env.stub.Commit(_commit())
    assert response.consumed_count == 3 and not response.replayed
    assert [(e.topic, e.sequence, e.message_id) for e in response.published] == [
        (topic_name("out"), 1, "o1"),
        (topic_name("out"), 2, "o2"),
    ]
    assert (response.state.version, response.state.data.data) == (2, b"v2")
    consumed = await env.events("in")
    assert {(e.status, e.consumed_by) for e in consumed} == {(S.EVENT_STATUS_CONSUMED, "run-1")}
    assert [e.status for e in await env.events("out")] == [S.EVENT_STATUS_PENDING] * 2


async def test_a_producer_commit_publishes_to_several_topics_in_request_order(
    flow: EventsEnv,
) -> None:
    env = flow
    response = await env.stub.Commit(
        _commit(run_id="producer-1", consume=(), publish={"out": ["a", "b"], "in": ["c"]})
    )
    assert response.consumed_count == 0
    assert [(e.topic, e.sequence) for e in response.published] == [
        (topic_name("out"), 1),
        (topic_name("out"), 2),
        (topic_name("in"), 4),
    ]


async def test_version_conflict_after_consume_and_publish_ran_changes_nothing(
    flow: EventsEnv,
) -> None:
    env = flow
    with _statements(env) as ran:
        error = await rpc_error(env.stub.Commit(_commit(expected_version=0)))
    assert error.code == grpc.StatusCode.ABORTED
    assert error.reason == "STATE_VERSION_CONFLICT"
    # The transaction got past consuming and publishing before the state write failed ...
    assert any(s.startswith("UPDATE events_events SET status") for s in ran), ran
    assert any("INSERT INTO events_events" in s for s in ran), ran
    assert any(s.startswith("INSERT INTO events_states") for s in ran), ran
    # ... and none of it is visible.
    await _assert_nothing_committed(env)
    retried = await env.stub.Commit(_commit(expected_version=1))
    assert not retried.replayed, "a failed commit records no result to replay"
    assert retried.consumed_count == 3 and retried.state.version == 2


async def test_unknown_publish_topic_listed_last_changes_nothing(flow: EventsEnv) -> None:
    env = flow
    request = _commit(publish={"out": ["o1"], "zz-missing": ["x"]})
    with _statements(env) as ran:
        error = await rpc_error(env.stub.Commit(request))
    assert error.code == grpc.StatusCode.NOT_FOUND
    assert error.resource_name == topic_name("zz-missing")
    assert any("INSERT INTO events_events" in s for s in ran), "out was published first"
    await _assert_nothing_committed(env)


async def test_unknown_consume_topic_is_not_found(flow: EventsEnv) -> None:
    env = flow
    error = await rpc_error(env.stub.Commit(_commit(consume=("in", "ghost"))))
    assert error.code == grpc.StatusCode.NOT_FOUND
    assert error.resource_name == topic_name("ghost")
    await _assert_nothing_committed(env)


async def test_a_repeated_commit_returns_the_first_result_and_changes_nothing(
    flow: EventsEnv,
) -> None:
    env = flow
    first = await env.stub.Commit(_commit())
    # A retry after a lost reply; even a changed request replays the first result.
    again = await env.stub.Commit(_commit(expected_version=7, publish={"out": ["o3"]}))
    assert again.replayed
    assert again.consumed_count == first.consumed_count
    assert [e.name for e in again.published] == [e.name for e in first.published]
    assert [e.message_id for e in again.published] == ["o1", "o2"]
    assert again.state == first.state
    assert [e.message_id for e in await env.events("out")] == ["o1", "o2"]
    assert (await env.state()).version == 2
    # the state moves on; the replay still answers with the state this run wrote
    await env.stub.CommitState(
        rpc.CommitStateRequest(name=state_name(), expected_version=2, data=payload(b"v3"))
    )
    assert (await env.stub.Commit(_commit())).state == first.state


async def test_concurrent_copies_of_one_commit_apply_once(flow: EventsEnv) -> None:
    env = flow
    responses = await asyncio.gather(*(env.stub.Commit(_commit()) for _ in range(8)))
    assert sorted(r.replayed for r in responses) == [False] + [True] * 7
    assert {tuple(e.name for e in r.published) for r in responses} == {
        (f"{topic_name('out')}/events/1", f"{topic_name('out')}/events/2")
    }
    assert {(r.consumed_count, r.state.version) for r in responses} == {(3, 2)}
    assert len(await env.events("out")) == 2


async def test_commit_consumes_only_the_runs_own_reservations(env: EventsEnv) -> None:
    await env.create_topic("in")
    await env.publish_n(4, topic="in")
    await env.reserve("run-1", n=2, topic="in")
    await env.reserve("run-2", n=2, topic="in")
    response = await env.stub.Commit(
        rpc.CommitRequest(
            parent=namespace_name(), run_id="run-1", consume_topics=[topic_name("in")]
        )
    )
    assert response.consumed_count == 2 and not response.HasField("state")
    assert [(e.sequence, e.status) for e in await env.events("in")] == [
        (1, S.EVENT_STATUS_CONSUMED),
        (2, S.EVENT_STATUS_CONSUMED),
        (3, S.EVENT_STATUS_RESERVED),
        (4, S.EVENT_STATUS_RESERVED),
    ]
