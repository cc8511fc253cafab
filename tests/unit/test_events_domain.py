"""Event-store domain: resource names and draft validation (pure, no I/O)."""

from __future__ import annotations

import pytest

from conveyor_core.errors import InvalidArgument
from conveyor_events.domain import validation as v
from conveyor_events.domain.model import EventDraft, EventRef, HandlerRef, Payload, TopicRef
from conveyor_events.settings import EventStoreSettings

LIMITS = EventStoreSettings(max_payload_bytes=10, max_title_length=5)


def test_names_round_trip() -> None:
    topic = v.parse_topic("namespaces/acme/topics/orders.new", "parent")
    assert topic == TopicRef("acme", "orders.new")
    assert topic.name == "namespaces/acme/topics/orders.new"
    assert topic.channel == "topic:acme/orders.new"
    event = v.parse_event("namespaces/acme/topics/orders/events/42", "name")
    assert event == EventRef("acme", "orders", 42) and event.name.endswith("/events/42")
    state = v.parse_handler_state("namespaces/acme/handlers/fetch_orders/state", "name")
    assert state == HandlerRef("acme", "fetch_orders")
    assert state.name == "namespaces/acme/handlers/fetch_orders/state"


@pytest.mark.parametrize(
    "name",
    [
        "",
        "namespaces/acme",
        "namespaces/acme/topics/",
        "namespaces/acme/topics/Orders",
        "namespaces/ACME/topics/orders",
        "namespaces/acme/queues/orders",
        "namespaces/acme/topics/orders/extra",
    ],
)
def test_bad_topic_names_name_the_field(name: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        v.parse_topic(name, "parent")
    assert [x.field for x in info.value.violations] == ["parent"]


@pytest.mark.parametrize("sequence", ["0", "-1", "x", "1.5", "9" * 19])
def test_event_sequences_are_positive_integers(sequence: str) -> None:
    with pytest.raises(InvalidArgument):
        v.parse_event(f"namespaces/acme/topics/orders/events/{sequence}", "name")


def test_draft_violations_carry_field_paths() -> None:
    drafts = [
        EventDraft("a", "ok"),
        EventDraft("", "too long"),
        EventDraft("c", " ", Payload(b"x" * 11), correlation_id="bad id"),
    ]
    fields = [x.field for x in v.draft_violations(drafts, LIMITS, "events")]
    assert fields == [
        "events[1].message_id",
        "events[1].title",
        "events[2].title",
        "events[2].correlation_id",
        "events[2].payload.data",
    ]


@pytest.mark.parametrize(
    ("run_id", "ok"),
    [("run-1", True), ("namespaces/a/runs/9f3@x+y=z", True), ("", False), ("a b", False)],
)
def test_run_ids(run_id: str, ok: bool) -> None:
    assert (v.run_id_violations(run_id, LIMITS, "run_id") == []) is ok
