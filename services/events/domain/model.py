"""Event-store domain types. Pure data: no I/O, nothing from SQLAlchemy or protobuf."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class EventStatus(StrEnum):
    """An event's place in consumption: PENDING -> RESERVED -> CONSUMED, or SKIPPED by a person."""

    PENDING = "PENDING"
    RESERVED = "RESERVED"
    CONSUMED = "CONSUMED"
    SKIPPED = "SKIPPED"


#: The statuses a person may skip from.
SKIPPABLE = frozenset({EventStatus.PENDING, EventStatus.RESERVED})


@dataclass(frozen=True, slots=True)
class Payload:
    data: bytes = b""
    content_type: str = ""


@dataclass(frozen=True, slots=True)
class TopicRef:
    namespace: str
    topic: str

    @property
    def name(self) -> str:
        return f"namespaces/{self.namespace}/topics/{self.topic}"

    @property
    def channel(self) -> str:
        """Coordination channel notified after events are published to (or released in) the topic.

        The channel is `topic:{namespace}/{topic}`. Long-polling consumers and
        on-event schedules listen on it to wake; a wake-up is a hint, so
        listeners always re-read the store.
        """
        return f"topic:{self.namespace}/{self.topic}"


@dataclass(frozen=True, slots=True)
class EventRef:
    namespace: str
    topic: str
    sequence: int

    @property
    def topic_ref(self) -> TopicRef:
        return TopicRef(self.namespace, self.topic)

    @property
    def name(self) -> str:
        return event_name(self.topic_ref.name, self.sequence)


def event_name(topic_name: str, sequence: int) -> str:
    """The resource name of the event `sequence` in the topic named `topic_name`."""
    return f"{topic_name}/events/{sequence}"


@dataclass(frozen=True, slots=True)
class HandlerRef:
    namespace: str
    handler: str

    @property
    def name(self) -> str:
        """The resource name of the handler's state."""
        return f"namespaces/{self.namespace}/handlers/{self.handler}/state"


@dataclass(frozen=True, slots=True)
class Topic:
    namespace: str
    topic: str
    workflow: str = ""
    description: str = ""
    created_at: datetime | None = None

    @property
    def ref(self) -> TopicRef:
        return TopicRef(self.namespace, self.topic)


@dataclass(frozen=True, slots=True)
class EventDraft:
    """What a producer publishes; the store gives it a sequence."""

    message_id: str
    title: str
    payload: Payload = Payload()
    correlation_id: str = ""


@dataclass(frozen=True, slots=True)
class Event:
    namespace: str
    topic: str
    sequence: int
    message_id: str
    title: str
    payload: Payload
    correlation_id: str
    status: EventStatus
    published_at: datetime
    reserved_by: str = ""
    reserved_at: datetime | None = None
    consumed_by: str = ""
    consumed_at: datetime | None = None
    skipped_by: str = ""
    skip_reason: str = ""
    skipped_at: datetime | None = None

    @property
    def ref(self) -> EventRef:
        return EventRef(self.namespace, self.topic, self.sequence)

    @property
    def topic_ref(self) -> TopicRef:
        return TopicRef(self.namespace, self.topic)


@dataclass(frozen=True, slots=True)
class PublishedEvent:
    """One draft's outcome: the stored event, and whether its message id had been published."""

    event: Event
    already_published: bool


@dataclass(frozen=True, slots=True)
class HandlerState:
    """A handler's versioned state; version 0 (and no data) when never committed."""

    ref: HandlerRef
    version: int = 0
    data: Payload | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class StateWrite:
    """New handler state, stored only if the current version is `expected_version`."""

    ref: HandlerRef
    expected_version: int
    data: Payload


@dataclass(frozen=True, slots=True)
class TopicStats:
    topic: TopicRef
    counts: dict[EventStatus, int] = field(default_factory=dict)
    oldest_pending_at: datetime | None = None
    stale: int = 0


@dataclass(frozen=True, slots=True)
class CommitResult:
    consumed_count: int
    published: tuple[Event, ...]
    state: HandlerState | None
    replayed: bool = False
