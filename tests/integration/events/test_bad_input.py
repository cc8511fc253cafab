"""Bad input gets INVALID_ARGUMENT with field paths (or NOT_FOUND), and stores nothing."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import duration_pb2

from conveyor.common.v1 import types_pb2
from conveyor.events.v1 import messages_pb2 as m
from conveyor.events.v1 import service_pb2 as rpc
from tests.helpers.events import (
    EventsEnv,
    draft,
    namespace_name,
    payload,
    rpc_error,
    state_name,
    topic_name,
)

BIG = b"x" * (1024 * 1024 + 1)
TOPIC = topic_name()
EVENT = f"{TOPIC}/events/1"


def _publish(*drafts: m.EventDraft, parent: str = TOPIC) -> tuple[str, object]:
    return "PublishEvents", rpc.PublishEventsRequest(parent=parent, events=list(drafts))


def _commit(**fields) -> tuple[str, object]:  # type: ignore[no-untyped-def]
    return "Commit", rpc.CommitRequest(**{"parent": namespace_name(), "run_id": "run-1", **fields})


def _entry(topic: str, *drafts: m.EventDraft) -> rpc.TopicEvents:
    return rpc.TopicEvents(topic=topic, events=list(drafts))


BAD: dict[str, tuple[tuple[str, object], list[str]]] = {
    # PublishEvents
    "publish: missing parent": (_publish(draft("a"), parent=""), ["parent"]),
    "publish: not a topic name": (_publish(draft("a"), parent="topics/orders"), ["parent"]),
    "publish: malformed topic id": (
        _publish(draft("a"), parent="namespaces/test/topics/Bad Topic!"),
        ["parent"],
    ),
    "publish: malformed namespace": (
        _publish(draft("a"), parent="namespaces/Test/topics/orders"),
        ["parent"],
    ),
    "publish: empty batch": (_publish(), ["events"]),
    "publish: batch too large": (_publish(*(draft(f"m{i}") for i in range(1001))), ["events"]),
    "publish: missing title": (
        _publish(draft("a"), draft("b"), draft("c", title="")),
        ["events[2].title"],
    ),
    "publish: blank title": (_publish(draft("a", title="   ")), ["events[0].title"]),
    "publish: long title": (_publish(draft("a"), draft("b", title="t" * 201)), ["events[1].title"]),
    "publish: missing message id": (_publish(draft("")), ["events[0].message_id"]),
    "publish: long message id": (_publish(draft("m" * 257, title="t")), ["events[0].message_id"]),
    "publish: oversize payload": (_publish(draft("a", data=BIG)), ["events[0].payload.data"]),
    "publish: long content type": (
        _publish(
            m.EventDraft(
                message_id="a",
                title="t",
                payload=types_pb2.Payload(content_type="x" * 256),
            )
        ),
        ["events[0].payload.content_type"],
    ),
    "publish: bad correlation id": (
        _publish(draft("a", correlation_id="has spaces")),
        ["events[0].correlation_id"],
    ),
    "publish: every bad field at once": (
        _publish(draft("a", title=""), draft("", data=BIG)),
        ["events[0].title", "events[1].message_id", "events[1].payload.data"],
    ),
    # topics
    "create: malformed topic id": (
        ("CreateTopic", rpc.CreateTopicRequest(parent=namespace_name(), topic_id="Orders")),
        ["topic_id"],
    ),
    "create: missing topic id": (
        ("CreateTopic", rpc.CreateTopicRequest(parent=namespace_name())),
        ["topic_id"],
    ),
    "create: bad parent": (
        ("CreateTopic", rpc.CreateTopicRequest(parent="namespaces/", topic_id="x")),
        ["parent"],
    ),
    "create: bad workflow": (
        (
            "CreateTopic",
            rpc.CreateTopicRequest(
                parent=namespace_name(), topic_id="x", topic=m.Topic(workflow="Work Flow")
            ),
        ),
        ["topic.workflow"],
    ),
    "create: long description": (
        (
            "CreateTopic",
            rpc.CreateTopicRequest(
                parent=namespace_name(), topic_id="x", topic=m.Topic(description="d" * 1025)
            ),
        ),
        ["topic.description"],
    ),
    "get topic: malformed name": (("GetTopic", rpc.GetTopicRequest(name="orders")), ["name"]),
    "list topics: bad workflow": (
        ("ListTopics", rpc.ListTopicsRequest(parent=namespace_name(), workflow="W F")),
        ["workflow"],
    ),
    "list topics: negative page size": (
        ("ListTopics", rpc.ListTopicsRequest(parent=namespace_name(), page_size=-1)),
        ["page_size"],
    ),
    # consumption
    "reserve: missing run id": (
        ("ReserveEvents", rpc.ReserveEventsRequest(parent=TOPIC, max_events=1)),
        ["run_id"],
    ),
    "reserve: run id with spaces": (
        ("ReserveEvents", rpc.ReserveEventsRequest(parent=TOPIC, run_id="a b", max_events=1)),
        ["run_id"],
    ),
    "reserve: long run id": (
        ("ReserveEvents", rpc.ReserveEventsRequest(parent=TOPIC, run_id="r" * 257, max_events=1)),
        ["run_id"],
    ),
    "reserve: zero events": (
        ("ReserveEvents", rpc.ReserveEventsRequest(parent=TOPIC, run_id="r")),
        ["max_events"],
    ),
    "reserve: too many events": (
        ("ReserveEvents", rpc.ReserveEventsRequest(parent=TOPIC, run_id="r", max_events=1001)),
        ["max_events"],
    ),
    "release: bad sequence": (
        ("ReleaseEvents", rpc.ReleaseEventsRequest(parent=TOPIC, run_id="r", sequences=[1, 0])),
        ["sequences[1]"],
    ),
    "consume: negative sequence": (
        ("ConsumeEvents", rpc.ConsumeEventsRequest(parent=TOPIC, run_id="r", sequences=[-1])),
        ["sequences[0]"],
    ),
    "consume: missing run id": (
        ("ConsumeEvents", rpc.ConsumeEventsRequest(parent=TOPIC)),
        ["run_id"],
    ),
    "skip: sequence not a number": (
        ("SkipEvent", rpc.SkipEventRequest(name=f"{TOPIC}/events/abc", skipped_by="a", reason="r")),
        ["name"],
    ),
    "skip: sequence zero": (
        ("SkipEvent", rpc.SkipEventRequest(name=f"{TOPIC}/events/0", skipped_by="a", reason="r")),
        ["name"],
    ),
    "skip: no who and no why": (
        ("SkipEvent", rpc.SkipEventRequest(name=EVENT)),
        ["skipped_by", "reason"],
    ),
    "skip: long reason": (
        ("SkipEvent", rpc.SkipEventRequest(name=EVENT, skipped_by="a", reason="r" * 1025)),
        ["reason"],
    ),
    # browsing
    "list events: unspecified status": (
        ("ListEvents", rpc.ListEventsRequest(parent=TOPIC, statuses=[0])),
        ["statuses"],
    ),
    "list events: unknown order": (
        ("ListEvents", rpc.ListEventsRequest(parent=TOPIC, order=99)),
        ["order"],
    ),
    "get event: topic name": (("GetEvent", rpc.GetEventRequest(name=TOPIC)), ["name"]),
    "stale: negative threshold": (
        (
            "ListStaleEvents",
            rpc.ListStaleEventsRequest(
                parent=namespace_name(), older_than=duration_pb2.Duration(seconds=-5)
            ),
        ),
        ["older_than"],
    ),
    "stale: topic as parent": (
        ("ListStaleEvents", rpc.ListStaleEventsRequest(parent=TOPIC)),
        ["parent"],
    ),
    # state
    "get state: not a state name": (
        ("GetState", rpc.GetStateRequest(name="namespaces/test/handlers/h")),
        ["name"],
    ),
    "get state: malformed handler": (
        ("GetState", rpc.GetStateRequest(name="namespaces/test/handlers/H!/state")),
        ["name"],
    ),
    "commit state: negative version": (
        ("CommitState", rpc.CommitStateRequest(name=state_name(), expected_version=-1)),
        ["expected_version"],
    ),
    "commit state: oversize data": (
        ("CommitState", rpc.CommitStateRequest(name=state_name(), data=payload(BIG))),
        ["data.data"],
    ),
    # Commit
    "commit: missing run id": (_commit(run_id=""), ["run_id"]),
    "commit: consume topic of another namespace": (
        _commit(consume_topics=[topic_name("orders", "other")]),
        ["consume_topics[0]"],
    ),
    "commit: malformed publish topic": (
        _commit(publish=[_entry("orders", draft("a"))]),
        ["publish[0].topic"],
    ),
    "commit: bad drafts": (
        _commit(
            publish=[
                _entry(TOPIC, draft("a")),
                _entry(topic_name("audit"), draft("b"), draft("c"), draft("d", title="")),
            ]
        ),
        ["publish[1].events[2].title"],
    ),
    "commit: too many events": (
        _commit(
            publish=[
                _entry(TOPIC, *(draft(f"a{i}") for i in range(600))),
                _entry(topic_name("audit"), *(draft(f"b{i}") for i in range(401))),
            ]
        ),
        ["publish"],
    ),
    "commit: too many topics": (
        _commit(publish=[_entry(topic_name(f"t{i}"), draft("a")) for i in range(65)]),
        ["publish"],
    ),
    "commit: state of another namespace": (
        _commit(state=rpc.StateWrite(name=state_name("h", "other"))),
        ["state.name"],
    ),
    "commit: state version and data": (
        _commit(state=rpc.StateWrite(name=state_name(), expected_version=-1, data=payload(BIG))),
        ["state.data.data", "state.expected_version"],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
async def test_bad_input_is_invalid_argument_naming_each_field(
    env: EventsEnv, topic: str, case: str
) -> None:
    (method, request), fields = BAD[case]
    error = await rpc_error(getattr(env.stub, method)(request))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT, error
    assert error.reason == "INVALID_ARGUMENT"
    assert sorted(f for f, _ in error.field_violations) == sorted(fields)
    assert all(description for _, description in error.field_violations)
    # nothing was stored, and the service still serves
    assert await env.events() == []
    assert (await env.state()).version == 0
    topics = await env.stub.ListTopics(rpc.ListTopicsRequest(parent=namespace_name()))
    assert [t.topic_id for t in topics.topics] == ["orders"]


NOT_FOUND: dict[str, tuple[str, object]] = {
    "publish": ("PublishEvents", rpc.PublishEventsRequest(parent=topic_name("ghost"))),
    "reserve": (
        "ReserveEvents",
        rpc.ReserveEventsRequest(parent=topic_name("ghost"), run_id="r", max_events=1),
    ),
    "release": ("ReleaseEvents", rpc.ReleaseEventsRequest(parent=topic_name("ghost"), run_id="r")),
    "consume": ("ConsumeEvents", rpc.ConsumeEventsRequest(parent=topic_name("ghost"), run_id="r")),
    "stats": ("GetTopicStats", rpc.GetTopicStatsRequest(name=topic_name("ghost"))),
    "list events": ("ListEvents", rpc.ListEventsRequest(parent=topic_name("ghost"))),
    "get event": ("GetEvent", rpc.GetEventRequest(name=f"{topic_name('ghost')}/events/1")),
    "skip": ("SkipEvent", rpc.SkipEventRequest(name=EVENT, skipped_by="a", reason="r")),
    "commit": _commit(publish=[_entry(topic_name("ghost"), draft("a"))]),
}


@pytest.mark.parametrize("case", sorted(NOT_FOUND))
async def test_unknown_resources_are_not_found(env: EventsEnv, topic: str, case: str) -> None:
    method, request = NOT_FOUND[case]
    if case == "publish":
        request.events.append(draft("a"))  # type: ignore[attr-defined]
    error = await rpc_error(getattr(env.stub, method)(request))
    assert error.code == grpc.StatusCode.NOT_FOUND, error
    assert error.resource_name
