"""The storage contract of topics, events and handler state: Entity+Verb methods over frozen params.

Implementations return domain types only and raise domain errors
(`TopicNotFound`, `EventNotFound`, `TopicAlreadyExists`, `EventNotSkippable`,
`StateVersionConflict`), never driver errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from conveyor_events.domain.model import (
    CommitResult,
    Event,
    EventDraft,
    EventRef,
    EventStatus,
    HandlerRef,
    HandlerState,
    PublishedEvent,
    StateWrite,
    Topic,
    TopicRef,
    TopicStats,
)


@dataclass(frozen=True, slots=True)
class TopicListParams:
    namespace: str
    workflow: str | None = None
    after: str = ""
    limit: int = 50


@dataclass(frozen=True, slots=True)
class PublishParams:
    """Drafts for one topic; validated, correlation ids filled."""

    topic: TopicRef
    drafts: tuple[EventDraft, ...]
    now: datetime


@dataclass(frozen=True, slots=True)
class ReserveParams:
    topic: TopicRef
    run_id: str
    limit: int
    now: datetime


@dataclass(frozen=True, slots=True)
class RunEventsParams:
    """A run's reservations in a topic: all of them, or only `sequences` when given."""

    topic: TopicRef
    run_id: str
    sequences: tuple[int, ...]
    now: datetime


@dataclass(frozen=True, slots=True)
class SkipParams:
    event: EventRef
    skipped_by: str
    reason: str
    now: datetime


@dataclass(frozen=True, slots=True)
class EventListParams:
    topic: TopicRef
    statuses: tuple[EventStatus, ...] = ()
    after_sequence: int | None = None
    limit: int = 50
    newest_first: bool = False


@dataclass(frozen=True, slots=True)
class StaleCursor:
    """Position in the stale listing: (published_at, topic, sequence) of the last event shown."""

    published_at_us: int
    topic: str
    sequence: int


@dataclass(frozen=True, slots=True)
class StaleListParams:
    namespace: str
    published_before: datetime
    after: StaleCursor | None = None
    limit: int = 50


@dataclass(frozen=True, slots=True)
class StateCommitParams:
    write: StateWrite
    now: datetime


@dataclass(frozen=True, slots=True)
class CommitParams:
    """One consumer or producer commit; applied in one transaction or not at all."""

    namespace: str
    run_id: str
    consume_topics: tuple[TopicRef, ...]
    publish: tuple[tuple[TopicRef, tuple[EventDraft, ...]], ...]
    state: StateWrite | None
    now: datetime


class EventStore(Protocol):
    async def topic_insert(self, topic: Topic) -> Topic: ...
    async def topic_get(self, ref: TopicRef) -> Topic: ...
    async def topic_list(self, params: TopicListParams) -> list[Topic]: ...
    async def topic_stats(self, ref: TopicRef, stale_before: datetime) -> TopicStats: ...
    async def event_publish(self, params: PublishParams) -> list[PublishedEvent]: ...
    async def event_reserve(self, params: ReserveParams) -> list[Event]: ...
    async def event_release(self, params: RunEventsParams) -> int: ...
    async def event_consume(self, params: RunEventsParams) -> int: ...
    async def event_skip(self, params: SkipParams) -> Event: ...
    async def event_get(self, ref: EventRef) -> Event: ...
    async def event_list(self, params: EventListParams) -> list[Event]: ...
    async def event_list_stale(self, params: StaleListParams) -> list[Event]: ...
    async def state_get(self, ref: HandlerRef) -> HandlerState: ...
    async def state_commit(self, params: StateCommitParams) -> HandlerState: ...
    async def commit_apply(self, params: CommitParams) -> CommitResult: ...
