"""Protobuf <-> domain translation for EventStoreService. No logic beyond field mapping."""

from __future__ import annotations

from conveyor.common.v1 import types_pb2
from conveyor.events.v1 import messages_pb2 as pb
from conveyor_core.protoconv import ts
from conveyor_events.domain.model import (
    Event,
    EventDraft,
    EventStatus,
    HandlerState,
    Payload,
    Topic,
    TopicStats,
)

STATUS_TO_PB = {s: pb.EventStatus.Value(f"EVENT_STATUS_{s.value}") for s in EventStatus}
STATUS_FROM_PB = {v: k for k, v in STATUS_TO_PB.items()}


def payload_from_pb(message: types_pb2.Payload) -> Payload:
    return Payload(message.data, message.content_type)


def payload_to_pb(payload: Payload | None) -> types_pb2.Payload | None:
    if payload is None:
        return None
    return types_pb2.Payload(data=payload.data, content_type=payload.content_type)


def draft_from_pb(message: pb.EventDraft) -> EventDraft:
    return EventDraft(
        message_id=message.message_id,
        title=message.title,
        payload=payload_from_pb(message.payload),
        correlation_id=message.correlation_id,
    )


def topic_to_pb(topic: Topic) -> pb.Topic:
    return pb.Topic(
        name=topic.ref.name,
        namespace=topic.namespace,
        topic_id=topic.topic,
        workflow=topic.workflow,
        description=topic.description,
        create_time=ts(topic.created_at),
    )


def event_to_pb(event: Event) -> pb.Event:
    return pb.Event(
        name=event.ref.name,
        topic=event.topic_ref.name,
        sequence=event.sequence,
        message_id=event.message_id,
        title=event.title,
        payload=payload_to_pb(event.payload),
        correlation_id=event.correlation_id,
        status=STATUS_TO_PB[event.status],
        publish_time=ts(event.published_at),
        reserved_by=event.reserved_by,
        reserve_time=ts(event.reserved_at),
        consumed_by=event.consumed_by,
        consume_time=ts(event.consumed_at),
        skipped_by=event.skipped_by,
        skip_reason=event.skip_reason,
        skip_time=ts(event.skipped_at),
    )


def stats_to_pb(stats: TopicStats) -> pb.TopicStats:
    counts = stats.counts
    return pb.TopicStats(
        topic=stats.topic.name,
        pending=counts.get(EventStatus.PENDING, 0),
        reserved=counts.get(EventStatus.RESERVED, 0),
        consumed=counts.get(EventStatus.CONSUMED, 0),
        skipped=counts.get(EventStatus.SKIPPED, 0),
        oldest_pending_publish_time=ts(stats.oldest_pending_at),
        stale=stats.stale,
    )


def state_to_pb(state: HandlerState | None) -> pb.HandlerState | None:
    if state is None:
        return None
    return pb.HandlerState(
        name=state.ref.name,
        version=state.version,
        data=payload_to_pb(state.data),
        update_time=ts(state.updated_at),
    )
