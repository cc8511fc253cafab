"""Row <-> domain conversion for the event-store tables (instants are epoch microseconds)."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from sqlalchemy import RowMapping

from conveyor_core.clock import from_micros, opt_from_micros, to_micros
from conveyor_events.domain.model import (
    Event,
    EventDraft,
    EventStatus,
    HandlerRef,
    HandlerState,
    Payload,
    Topic,
    TopicRef,
)


def topic_from_row(row: RowMapping | Mapping[str, Any]) -> Topic:
    return Topic(
        namespace=row["namespace"],
        topic=row["topic"],
        workflow=row["workflow"],
        description=row["description"],
        created_at=from_micros(row["created_at"]),
    )


def topic_to_row(topic: Topic, now_us: int) -> dict[str, Any]:
    return {
        "namespace": topic.namespace,
        "topic": topic.topic,
        "workflow": topic.workflow,
        "description": topic.description,
        "last_sequence": 0,
        "created_at": now_us,
    }


def event_from_row(row: RowMapping | Mapping[str, Any]) -> Event:
    return Event(
        namespace=row["namespace"],
        topic=row["topic"],
        sequence=row["sequence"],
        message_id=row["message_id"],
        title=row["title"],
        payload=Payload(bytes(row["payload"]), row["content_type"]),
        correlation_id=row["correlation_id"],
        status=EventStatus(row["status"]),
        published_at=from_micros(row["published_at"]),
        reserved_by=row["reserved_by"] or "",
        reserved_at=opt_from_micros(row["reserved_at"]),
        consumed_by=row["consumed_by"] or "",
        consumed_at=opt_from_micros(row["consumed_at"]),
        skipped_by=row["skipped_by"] or "",
        skip_reason=row["skip_reason"] or "",
        skipped_at=opt_from_micros(row["skipped_at"]),
    )


def new_event_row(topic: TopicRef, sequence: int, draft: EventDraft, now_us: int) -> dict[str, Any]:
    return {
        "namespace": topic.namespace,
        "topic": topic.topic,
        "sequence": sequence,
        "message_id": draft.message_id,
        "title": draft.title,
        "payload": draft.payload.data,
        "content_type": draft.payload.content_type,
        "correlation_id": draft.correlation_id,
        "status": EventStatus.PENDING.value,
        "published_at": now_us,
        "reserved_by": None,
        "reserved_at": None,
        "consumed_by": None,
        "consumed_at": None,
        "skipped_by": None,
        "skip_reason": None,
        "skipped_at": None,
    }


def state_from_row(ref: HandlerRef, row: RowMapping | Mapping[str, Any] | None) -> HandlerState:
    if row is None:
        return HandlerState(ref)
    return HandlerState(
        ref,
        row["version"],
        Payload(bytes(row["data"]), row["content_type"]),
        from_micros(row["updated_at"]),
    )


# -- the result a commit stores, so a repeated commit returns it -------------------


def commit_result_to_json(
    consumed: int, published: list[Event], state: HandlerState | None
) -> dict[str, Any]:
    """What `events_commits.result` keeps: counts, event keys, and the state written.

    Events are kept by key (their content never changes); the state is kept
    whole, because later commits move the handler to newer versions.
    """
    return {
        "consumed": consumed,
        "published": [[e.topic, e.sequence] for e in published],
        "state": None if state is None else _state_to_json(state),
    }


def _state_to_json(state: HandlerState) -> dict[str, Any]:
    data = state.data or Payload()
    return {
        "handler": state.ref.handler,
        "version": state.version,
        "updated_at": to_micros(state.updated_at) if state.updated_at else None,
        "content_type": data.content_type,
        "data": base64.b64encode(data.data).decode(),
    }


def state_from_json(namespace: str, value: Mapping[str, Any] | None) -> HandlerState | None:
    if value is None:
        return None
    return HandlerState(
        HandlerRef(namespace, value["handler"]),
        value["version"],
        Payload(base64.b64decode(value["data"]), value["content_type"]),
        opt_from_micros(value["updated_at"]),
    )
