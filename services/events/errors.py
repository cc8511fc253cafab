"""Errors of the event store (topics, events, state), each a conveyor_core error by gRPC code."""

from __future__ import annotations

from conveyor_core.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    NotFound,
    PreconditionViolation,
)
from conveyor_events.domain.model import EventRef, EventStatus, HandlerRef, TopicRef


class TopicNotFound(NotFound):
    """The topic does not exist; topics are created explicitly (CreateTopic)."""

    def __init__(self, ref: TopicRef) -> None:
        super().__init__(
            "conveyor.events.v1.Topic",
            ref.name,
            f"topic {ref.name!r} not found: create it first (CreateTopic)",
        )


class EventNotFound(NotFound):
    def __init__(self, ref: EventRef) -> None:
        super().__init__("conveyor.events.v1.Event", ref.name)


class TopicAlreadyExists(AlreadyExists):
    """The topic already exists."""

    reason = "TOPIC_ALREADY_EXISTS"

    def __init__(self, ref: TopicRef) -> None:
        super().__init__(f"topic {ref.name!r} already exists")


class EventNotSkippable(FailedPrecondition):
    """Only a pending or reserved event can be skipped."""

    reason = "EVENT_NOT_SKIPPABLE"

    def __init__(self, ref: EventRef, status: EventStatus) -> None:
        super().__init__(
            PreconditionViolation(
                "STATUS",
                ref.name,
                f"cannot skip an event that is {status.value}: "
                "only PENDING or RESERVED events can be skipped",
            )
        )


class StateVersionConflict(Aborted):
    """The handler state changed since it was read; re-read it and retry."""

    reason = "STATE_VERSION_CONFLICT"

    def __init__(self, ref: HandlerRef, expected: int, current: int) -> None:
        self.expected = expected
        self.current = current
        super().__init__(
            f"state {ref.name!r} is at version {current}, not the expected {expected}: "
            "re-read it and retry; nothing was changed"
        )
