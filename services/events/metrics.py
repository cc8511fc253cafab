"""The event store's metrics: publish/reserve/consume/skip counters, journal appends,
pending and stale gauges per topic, and the journal subscribers' lag.

Labels: `namespace` and `topic` (operator- or app-defined topic names, bounded by
the topics created), `status` (pending, reserved), `source` (the service part
of a journal record type: queue, scheduler, executor, events, workflow, or
other). Never a message id, a run id or a correlation id. Documented in
docs/observability.md.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

from opentelemetry.metrics import CallbackOptions, Observation

from conveyor_core.gauges import _LIVE, observe
from conveyor_core.metrics import announce as metrics_announce
from conveyor_core.metrics import meter
from conveyor_events.domain.journal import JournalDraft
from conveyor_events.domain.model import Event, TopicRef

_meter = meter(__name__)

#: Journal record types start with one of these (anything else counts as "other").
KNOWN_SOURCES = frozenset({"queue", "scheduler", "executor", "events", "workflow"})

PUBLISHED = _meter.create_counter(
    "conveyor.events.published",
    unit="{event}",
    description="Events stored (a message id published again is not counted).",
)
RESERVED = _meter.create_counter(
    "conveyor.events.reserved", unit="{event}", description="Events reserved by consumer runs."
)
CONSUMED = _meter.create_counter(
    "conveyor.events.consumed", unit="{event}", description="Events consumed by commits."
)
RELEASED = _meter.create_counter(
    "conveyor.events.released",
    unit="{event}",
    description="Reservations handed back to pending (a run ended without consuming).",
)
SKIPPED = _meter.create_counter(
    "conveyor.events.skipped", unit="{event}", description="Events a person skipped."
)
JOURNAL_APPENDED = _meter.create_counter(
    "conveyor.journal.appended",
    unit="{record}",
    description="Journal records received by appends, by source service (a relay that "
    "retries an append re-sends records already stored; they count again).",
)
_meter.create_observable_gauge(
    "conveyor.events.live",
    callbacks=[observe("events", "events")],
    unit="{event}",
    description="Pending and reserved events per topic.",
)
_meter.create_observable_gauge(
    "conveyor.events.stale",
    callbacks=[observe("events", "stale")],
    unit="{event}",
    description="Pending events older than CONVEYOR_EVENTS_STALE_AFTER_SECONDS per topic.",
)


def announce() -> None:
    """Export the rare-event counters from the start (conveyor_core.metrics.announce)."""
    metrics_announce(RELEASED, SKIPPED)


def _labels(topic: TopicRef) -> dict[str, str]:
    return {"namespace": topic.namespace, "topic": topic.topic}


def published(topic: TopicRef, count: int) -> None:
    if count:
        PUBLISHED.add(count, _labels(topic))


def reserved(topic: TopicRef, count: int) -> None:
    if count:
        RESERVED.add(count, _labels(topic))


def consumed(topic: TopicRef, count: int) -> None:
    if count:
        CONSUMED.add(count, _labels(topic))


def released(topic: TopicRef, count: int) -> None:
    if count:
        RELEASED.add(count, _labels(topic))


def skipped(topic: TopicRef) -> None:
    SKIPPED.add(1, _labels(topic))


def committed(
    consume_topics: Sequence[TopicRef], consumed_count: int, events: Sequence[Event]
) -> None:
    """A consumer commit: its consumed events (labelled with the topic when it names one,
    else topic "(several)") and the events it published."""
    if consumed_count:
        topics = set(consume_topics)
        if len(topics) == 1:
            consumed(next(iter(topics)), consumed_count)
        elif topics:
            namespace = next(iter(topics)).namespace
            CONSUMED.add(consumed_count, {"namespace": namespace, "topic": "(several)"})
    per_topic: dict[TopicRef, int] = {}
    for event in events:
        ref = TopicRef(event.namespace, event.topic)
        per_topic[ref] = per_topic.get(ref, 0) + 1
    for ref, n in per_topic.items():
        published(ref, n)


def appended(drafts: Sequence[JournalDraft]) -> None:
    per_source: dict[str, int] = {}
    for draft in drafts:
        source = draft.type.partition(".")[0]
        source = source if source in KNOWN_SOURCES else "other"
        per_source[source] = per_source.get(source, 0) + 1
    for source, n in per_source.items():
        JOURNAL_APPENDED.add(n, {"source": source})


class Subscribers:
    """Where each live journal subscription of this process is (for the lag gauge)."""

    def __init__(self) -> None:
        self._ids = itertools.count()
        self.positions: dict[int, int] = {}

    def open(self, position: int) -> int:
        key = next(self._ids)
        self.positions[key] = position
        return key

    def moved(self, key: int, position: int) -> None:
        self.positions[key] = position

    def close(self, key: int) -> None:
        self.positions.pop(key, None)


SUBSCRIBERS = Subscribers()


def _lag(options: CallbackOptions) -> Iterable[Observation]:
    heads = [
        row[1]
        for snapshot in list(_LIVE)
        if snapshot.name == "events"
        for row in snapshot.rows("journal_head")
    ]
    if not heads:  # no event store runs in this process
        return []
    head = max(heads)  # as of the snapshot: up to CONVEYOR_EVENTS_METRICS_REFRESH_SECONDS old
    lag = max((head - p for p in SUBSCRIBERS.positions.values()), default=0.0)
    return [Observation(max(0.0, lag))]


def _subscribers(options: CallbackOptions) -> Iterable[Observation]:
    return [Observation(len(SUBSCRIBERS.positions))]


_meter.create_observable_gauge(
    "conveyor.journal.subscriber_lag",
    callbacks=[_lag],
    unit="{record}",
    description="Records between the journal head and this replica's slowest live "
    "subscription (0: none open, or all caught up).",
)
_meter.create_observable_gauge(
    "conveyor.journal.subscribers",
    callbacks=[_subscribers],
    unit="{subscription}",
    description="Journal subscriptions open on this replica.",
)
