"""Event-store protobuf conversion: every field of an event, one at a time or in batches."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from google.protobuf import timestamp_pb2

from conveyor.common.v1 import types_pb2
from conveyor.events.v1 import messages_pb2 as pb
from conveyor.events.v1 import service_pb2 as rpc
from conveyor_events.api import convert
from conveyor_events.domain.model import Event, EventStatus, Payload

T0 = datetime(2026, 11, 21, 8, 30, 15, 123456, tzinfo=UTC)
TOPIC = "namespaces/acme/topics/orders"


def _at(instant: datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(instant)
    return out


def _event(sequence: int, status: EventStatus = EventStatus.PENDING, **fields) -> Event:  # type: ignore[no-untyped-def]
    return Event(
        "acme",
        "orders",
        sequence,
        f"m{sequence}",
        f"order {sequence}",
        Payload(b"{}", "application/json"),
        fields.pop("correlation_id", "corr-1"),
        status,
        fields.pop("published_at", T0),
        **fields,
    )


def test_a_skipped_event_carries_every_field() -> None:
    event = _event(
        7,
        EventStatus.SKIPPED,
        reserved_by="run-1",
        reserved_at=T0 + timedelta(seconds=1),
        consumed_by="run-0",
        consumed_at=T0 + timedelta(seconds=2),
        skipped_by="alice",
        skip_reason="duplicate order",
        skipped_at=T0 + timedelta(seconds=3),
    )
    assert convert.event_to_pb(event) == pb.Event(
        name=f"{TOPIC}/events/7",
        topic=TOPIC,
        sequence=7,
        message_id="m7",
        title="order 7",
        payload=types_pb2.Payload(data=b"{}", content_type="application/json"),
        correlation_id="corr-1",
        status=pb.EVENT_STATUS_SKIPPED,
        publish_time=_at(T0),
        reserved_by="run-1",
        reserve_time=_at(T0 + timedelta(seconds=1)),
        consumed_by="run-0",
        consume_time=_at(T0 + timedelta(seconds=2)),
        skipped_by="alice",
        skip_reason="duplicate order",
        skip_time=_at(T0 + timedelta(seconds=3)),
    )


def test_a_pending_event_leaves_the_later_instants_unset() -> None:
    message = convert.event_to_pb(_event(1, correlation_id=""))
    assert message.status == pb.EVENT_STATUS_PENDING
    assert message.publish_time == _at(T0)
    for field in ("reserve_time", "consume_time", "skip_time"):
        assert not message.HasField(field), field
    assert (message.correlation_id, message.reserved_by, message.skipped_by) == ("", "", "")


def test_add_events_builds_each_event_as_event_to_pb_does() -> None:
    later = T0 + timedelta(microseconds=1)
    events = [
        _event(1),
        _event(2, EventStatus.RESERVED, reserved_by="run-1", reserved_at=later),
        _event(3, published_at=later),
        _event(4, EventStatus.CONSUMED, consumed_by="run-1", consumed_at=T0),
    ]
    response = rpc.ReserveEventsResponse()
    convert.add_events(response.events, events)
    assert list(response.events) == [convert.event_to_pb(e) for e in events]
    # Instants converted once per batch are still copied into each message.
    response.events[0].publish_time.nanos = 0
    assert response.events[1].publish_time == _at(T0)
