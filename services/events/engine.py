"""The event-store engine: what each EventStoreService RPC does, over store, coordination, clock.

The servicer (api/servicer.py) parses resource names and translates protobuf.
The engine enforces the limits in `EventStoreSettings` (field paths in every
violation), fills defaults (correlation id, stale threshold), stamps times
from the injectable clock, and wakes listeners after publishes commit.

Wake-ups: after events are published (or released back to pending) the
engine notifies the coordination channel `topic:{namespace}/{topic}`
(`TopicRef.channel`). They are sent after the transaction commits, so a woken
listener always finds the events; they are hints, so a failed notify is
logged and never fails the call.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta

from conveyor_core.clock import Clock, SystemClock
from conveyor_core.context import get_correlation_id
from conveyor_core.coordination import Coordination
from conveyor_core.errors import FieldViolation
from conveyor_events import metrics
from conveyor_events.domain import validation as check
from conveyor_events.domain.model import (
    CommitResult,
    Event,
    EventDraft,
    EventRef,
    HandlerRef,
    HandlerState,
    PublishedEvent,
    StateWrite,
    Topic,
    TopicRef,
    TopicStats,
)
from conveyor_events.settings import EventStoreSettings
from conveyor_events.store.base import (
    CommitParams,
    EventListParams,
    EventStore,
    PublishParams,
    ReserveParams,
    RunEventsParams,
    SkipParams,
    StaleCursor,
    StaleListParams,
    StateCommitParams,
    TopicListParams,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CommitRequest:
    """A run's commit: what to consume, what to publish, which state to store."""

    namespace: str
    run_id: str
    consume_topics: tuple[TopicRef, ...] = ()
    publish: tuple[tuple[TopicRef, tuple[EventDraft, ...]], ...] = ()
    state: StateWrite | None = None


class EventStoreEngine:
    def __init__(
        self,
        store: EventStore,
        coordination: Coordination,
        settings: EventStoreSettings,
        clock: Clock | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock or SystemClock()
        self._coordination = coordination

    # -- topics -------------------------------------------------------------------

    async def topic_create(self, topic: Topic) -> Topic:
        limit = self.settings.max_description_length
        check.raise_if(check.text_violations(topic.description, "topic.description", limit))
        return await self.store.topic_insert(replace(topic, created_at=self.clock.now()))

    async def topic_get(self, ref: TopicRef) -> Topic:
        return await self.store.topic_get(ref)

    async def topic_list(self, params: TopicListParams) -> list[Topic]:
        return await self.store.topic_list(params)

    async def topic_stats(self, ref: TopicRef) -> TopicStats:
        stale_before = self.clock.now() - timedelta(seconds=self.settings.stale_after_seconds)
        return await self.store.topic_stats(ref, stale_before)

    # -- publish and consumption --------------------------------------------------------

    async def publish(self, topic: TopicRef, drafts: Sequence[EventDraft]) -> list[PublishedEvent]:
        """Publish a batch to one topic; idempotent per message id (see store/writes.py)."""
        check.raise_if(self._batch_violations(len(drafts), "events"))
        check.raise_if(check.draft_violations(drafts, self.settings, "events"))
        published = await self.store.event_publish(
            PublishParams(topic, _with_correlation(drafts), self.clock.now())
        )
        if any(not p.already_published for p in published):
            metrics.published(topic, sum(not p.already_published for p in published))
            await self._wake([topic])
        return published

    async def reserve(self, topic: TopicRef, run_id: str, max_events: int) -> list[Event]:
        violations = check.run_id_violations(run_id, self.settings, "run_id")
        if not 1 <= max_events <= self.settings.max_reserve:
            violations.append(
                FieldViolation("max_events", f"must be in [1, {self.settings.max_reserve}]")
            )
        check.raise_if(violations)
        reserved = await self.store.event_reserve(
            ReserveParams(topic, run_id, max_events, self.clock.now())
        )
        metrics.reserved(topic, len(reserved))
        return reserved

    async def release(self, topic: TopicRef, run_id: str, sequences: Sequence[int]) -> int:
        """Return a run's reservations to pending: a run that ended or crashed, or gave up."""
        released = await self.store.event_release(self._run_events(topic, run_id, sequences))
        if released:
            metrics.released(topic, released)
            log.info("released %d events of run %s in %s", released, run_id, topic.name)
            await self._wake([topic])
        return released

    async def consume(self, topic: TopicRef, run_id: str, sequences: Sequence[int]) -> int:
        consumed = await self.store.event_consume(self._run_events(topic, run_id, sequences))
        metrics.consumed(topic, consumed)
        return consumed

    async def skip(self, ref: EventRef, skipped_by: str, reason: str) -> Event:
        """A person skips a pending or reserved event, saying who and why."""
        s = self.settings
        check.raise_if(
            check.text_violations(
                skipped_by, "skipped_by", s.max_actor_length, required="who skips the event"
            )
            + check.text_violations(
                reason, "reason", s.max_reason_length, required="say why the event is skipped"
            )
        )
        event = await self.store.event_skip(SkipParams(ref, skipped_by, reason, self.clock.now()))
        metrics.skipped(TopicRef(event.namespace, event.topic))
        log.info(
            "event %s skipped by %r: %s",
            ref.name,
            event.skipped_by,
            event.skip_reason,
            extra={"correlation_id": event.correlation_id},
        )
        return event

    # -- reads ----------------------------------------------------------------------------

    async def event_get(self, ref: EventRef) -> Event:
        return await self.store.event_get(ref)

    async def event_list(self, params: EventListParams) -> list[Event]:
        return await self.store.event_list(params)

    async def stale_list(
        self,
        namespace: str,
        older_than: timedelta | None,
        after: StaleCursor | None,
        limit: int,
    ) -> list[Event]:
        """Pending events published more than `older_than` ago (default: the stale threshold)."""
        threshold = older_than or timedelta(seconds=self.settings.stale_after_seconds)
        return await self.store.event_list_stale(
            StaleListParams(namespace, self.clock.now() - threshold, after, limit)
        )

    # -- handler state ----------------------------------------------------------------

    async def state_get(self, ref: HandlerRef) -> HandlerState:
        return await self.store.state_get(ref)

    async def state_commit(self, write: StateWrite) -> HandlerState:
        check.raise_if(self._state_violations(write, ""))
        return await self.store.state_commit(StateCommitParams(write, self.clock.now()))

    # -- commit -----------------------------------------------------------------------

    async def commit(self, request: CommitRequest) -> CommitResult:
        """Consume, publish and store state in one transaction; idempotent per run id."""
        check.raise_if(self._commit_violations(request))
        result = await self.store.commit_apply(
            CommitParams(
                request.namespace,
                request.run_id,
                tuple(dict.fromkeys(request.consume_topics)),
                tuple((t, _with_correlation(d)) for t, d in request.publish),
                request.state,
                self.clock.now(),
            )
        )
        if result.replayed:
            log.info("commit of run %s replayed", request.run_id)
        else:
            metrics.committed(request.consume_topics, result.consumed_count, result.published)
            await self._wake({e.topic_ref for e in result.published})
        return result

    def _commit_violations(self, request: CommitRequest) -> list[FieldViolation]:
        s = self.settings
        out = check.run_id_violations(request.run_id, s, "run_id")
        named = {*request.consume_topics, *(t for t, _ in request.publish)}
        if len(named) > s.max_commit_topics:
            out.append(FieldViolation("publish", f"names more than {s.max_commit_topics} topics"))
        out += self._batch_violations(sum(len(d) for _, d in request.publish), "publish")
        for i, (_, drafts) in enumerate(request.publish):
            out += check.draft_violations(drafts, s, f"publish[{i}].events")
        if request.state is not None:
            out += self._state_violations(request.state, "state.")
        return out

    def _state_violations(self, write: StateWrite, prefix: str) -> list[FieldViolation]:
        out = check.payload_violations(write.data, self.settings, f"{prefix}data")
        if write.expected_version < 0:
            out.append(FieldViolation(f"{prefix}expected_version", "must not be negative"))
        return out

    # -- helpers ----------------------------------------------------------------------

    def _batch_violations(self, count: int, field: str) -> list[FieldViolation]:
        limit = self.settings.max_publish_batch
        if count > limit:
            return [FieldViolation(field, f"at most {limit} events per call, got {count}")]
        if count == 0 and field == "events":
            return [FieldViolation(field, "publish at least one event")]
        return []

    def _run_events(
        self, topic: TopicRef, run_id: str, sequences: Sequence[int]
    ) -> RunEventsParams:
        check.raise_if(
            check.run_id_violations(run_id, self.settings, "run_id")
            + check.sequence_violations(sequences, self.settings)
        )
        return RunEventsParams(topic, run_id, tuple(sequences), self.clock.now())

    async def _wake(self, refs: Iterable[TopicRef]) -> None:
        for ref in refs:
            try:
                await self._coordination.notify(ref.channel)
            except Exception:
                log.warning("could not notify %s; listeners fall back to polling", ref.channel)


def _with_correlation(drafts: Sequence[EventDraft]) -> tuple[EventDraft, ...]:
    """Drafts without a correlation id take the request's.

    Built with the constructor, not `dataclasses.replace`, which took twice as
    long (it inspects the fields each call), on every draft of every batch.
    """
    default = get_correlation_id() or ""
    if not default:
        return tuple(drafts)
    return tuple(
        d
        if d.correlation_id
        else EventDraft(d.message_id, d.title, d.payload, correlation_id=default)
        for d in drafts
    )
