"""The journal engine: append, read and subscribe over a JournalStore and coordination.

The servicer (api/journal_servicer.py) only translates protobuf to these
calls. The engine validates records and filters against the settings, wakes
subscribers after appends (coordination channel "journal"), and runs each
subscription: catch-up, then live.

A subscription reads the journal by position, one page of
`subscribe_page` records at a time, and hands records on one by one. It is an
async generator, so it reads the next page only after the consumer asked for
the record after the last one, that is after gRPC wrote the previous record
to the stream (`await context.write`), and HTTP/2 flow control makes that
write wait while a slow client does not read. A subscription therefore holds
at most one page in memory, however slow its client. `SubscriptionStats`
counts records read but not yet handed on, so tests can check the bound.

Live subscriptions share their reads. Every append wakes all of them at
once, and those at the same position with the same filter would each run the
same query: with ten subscribers, ten reads per append. `SharedReads` lets a
read asked for while an identical one is scheduled but has not yet started
join it, so a wake-up costs one query however many subscribers it wakes. A
read that has started is never joined: its snapshot may predate the joiner's
wake-up, and the joiner could miss the record it was woken for.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass

from opentelemetry import trace
from sqlalchemy.ext.asyncio import AsyncEngine

from conveyor_core.clock import Clock, SystemClock
from conveyor_core.coordination import Coordination
from conveyor_core.errors import FieldViolation, InvalidArgument
from conveyor_events import metrics
from conveyor_events.domain.journal import (
    JOURNAL_CHANNEL,
    JournalDraft,
    JournalFilter,
    JournalPage,
    JournalRecord,
    draft_violations,
    filter_violations,
    position_violations,
)
from conveyor_events.settings import EventStoreSettings
from conveyor_events.store.journal_base import (
    JournalAppendParams,
    JournalReadParams,
    JournalStore,
)
from conveyor_events.store.journal_sql import SqlJournalStore

_tracer = trace.get_tracer(__name__)

log = logging.getLogger(__name__)


@dataclass
class SubscriptionStats:
    """Counters over every subscription of one engine (instrumentation for back-pressure).

    Attributes:
        active: subscriptions currently open.
        pages_read: journal reads made by subscriptions.
        records_read: records those reads returned.
        buffered: records read from the database but not yet written to a stream.
        high_water: the highest `buffered` ever reached.
    """

    active: int = 0
    pages_read: int = 0
    records_read: int = 0
    buffered: int = 0
    high_water: int = 0

    def read(self, count: int) -> None:
        self.pages_read += 1
        self.records_read += count
        self.buffered += count
        self.high_water = max(self.high_water, self.buffered)

    def handed_on(self, count: int) -> None:
        self.buffered -= count


class _SharedRead:
    __slots__ = ("task", "waiters")

    def __init__(self, task: asyncio.Task[JournalPage]) -> None:
        self.task = task
        self.waiters = 0


class SharedReads:
    """Identical journal reads asked for before the first of them starts share one query."""

    def __init__(self, store: JournalStore) -> None:
        self._store = store
        self._scheduled: dict[JournalReadParams, _SharedRead] = {}
        self.queries = 0  # reads actually sent to the store (instrumentation)

    async def read(self, params: JournalReadParams) -> JournalPage:
        shared = self._scheduled.get(params)
        if shared is None:
            shared = _SharedRead(asyncio.ensure_future(self._query(params)))
            self._scheduled[params] = shared
        shared.waiters += 1
        try:
            # One caller cancelled (its client went away) must not cancel the others' read.
            return await asyncio.shield(shared.task)
        except asyncio.CancelledError:
            if shared.waiters == 1:  # the last one waiting: stop the read, free its connection
                shared.task.cancel()
                if self._scheduled.get(params) is shared:
                    del self._scheduled[params]
            raise
        finally:
            shared.waiters -= 1

    async def _query(self, params: JournalReadParams) -> JournalPage:
        # From here the query may be sent: a later caller needs a read of its own.
        del self._scheduled[params]
        self.queries += 1
        return await self._store.journal_read(params)


class JournalEngine:
    def __init__(
        self,
        store: JournalStore,
        coordination: Coordination,
        settings: EventStoreSettings,
        clock: Clock | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock or SystemClock()
        self.stats = SubscriptionStats()
        self.shared_reads = SharedReads(store)
        self._coordination = coordination

    async def append(self, drafts: Sequence[JournalDraft]) -> list[int]:
        """Append records; return their positions (an id seen before returns its position)."""
        limit = self.settings.max_journal_batch
        if len(drafts) > limit:
            raise InvalidArgument(
                FieldViolation("records", f"at most {limit} per append, got {len(drafts)}")
            )
        violations: list[FieldViolation] = []
        for i, draft in enumerate(drafts):
            violations += draft_violations(draft, self.settings, f"records[{i}].")
        if violations:
            raise InvalidArgument(violations)
        positions = await self.store.journal_append(JournalAppendParams(drafts, self.clock.now()))
        metrics.appended(drafts)
        if self.settings.journal_record_spans:
            trace_appends(drafts, positions)
        if positions:
            await self._coordination.notify(JOURNAL_CHANNEL)
        return positions

    async def read(
        self,
        after_position: int,
        journal_filter: JournalFilter,
        page_size: int,
        newest_first: bool = False,
        before_position: int = 0,
    ) -> JournalPage:
        """Up to `page_size` matching records after `after_position`, in position order;
        `newest_first`: the latest of them (below `before_position`, 0: the head)."""
        _check_query(after_position, journal_filter)
        violations = position_violations(before_position, "before_position")
        if before_position and not newest_first:
            violations.append(FieldViolation("before_position", "only with newest_first"))
        if violations:
            raise InvalidArgument(violations)
        return await self.store.journal_read(
            JournalReadParams(
                after_position, journal_filter, page_size, newest_first, before_position
            )
        )

    def subscribe(
        self, after_position: int, journal_filter: JournalFilter
    ) -> AsyncGenerator[JournalRecord]:
        """Matching records after `after_position`: those stored, then new ones as they commit.

        Raises InvalidArgument at once (not on first iteration) for a bad query.
        Close the iterator (`contextlib.aclosing`) to end the subscription.
        """
        _check_query(after_position, journal_filter)
        return self._subscription(after_position, journal_filter)

    async def _subscription(
        self, position: int, journal_filter: JournalFilter
    ) -> AsyncGenerator[JournalRecord]:
        page_size = self.settings.subscribe_page
        self.stats.active += 1
        tracked = metrics.SUBSCRIBERS.open(position)
        try:
            # Registered before the first read, so a notify that lands between
            # an empty read and the wait below is kept for that wait.
            async with self._coordination.listen([JOURNAL_CHANNEL]) as listener:
                while True:
                    page = await self.shared_reads.read(
                        JournalReadParams(position, journal_filter, page_size)
                    )
                    self.stats.read(len(page.records))
                    pending = len(page.records)
                    try:
                        for record in page.records:
                            yield record  # resumes once the record was written to the stream
                            pending -= 1
                            self.stats.handed_on(1)
                    finally:
                        self.stats.handed_on(pending)  # records dropped by a closed subscription
                    position = page.next_position
                    metrics.SUBSCRIBERS.moved(tracked, position)
                    if len(page.records) < page_size:  # caught up with the head
                        await listener.wait(self.settings.subscribe_poll_seconds)
        finally:
            self.stats.active -= 1
            metrics.SUBSCRIBERS.close(tracked)


def trace_appends(drafts: Sequence[JournalDraft], positions: Sequence[int]) -> None:
    """One `journal.append` span per record, in the record's own trace (its `trace_id`),
    linked to the appending call's span (a relay batch mixes many traces).

    A journal record carries its trace id but not the id of the span that wrote it,
    so these spans have no parent inside the trace: trace viewers show them at the
    trace's top level, next to the order's other spans. Nothing is recorded without
    a tracer provider (no collector configured)."""
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return
    batch = trace.get_current_span().get_span_context()
    links = [trace.Link(batch)] if batch.is_valid else []
    for draft, position in zip(drafts, positions, strict=False):
        try:
            trace_id = int(draft.trace_id, 16) if draft.trace_id else 0
        except ValueError:
            continue
        if not trace_id:
            continue
        parent = trace.NonRecordingSpan(
            trace.SpanContext(
                trace_id,
                random.getrandbits(64) or 1,
                is_remote=True,
                trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
            )
        )
        _tracer.start_span(  # started and ended at once, never made current: the cheap way
            "journal.append",
            context=trace.set_span_in_context(parent),
            links=links,
            attributes={
                "conveyor.journal.type": draft.type,
                "conveyor.journal.position": position,
                "conveyor.correlation_id": draft.correlation_id,
            },
        ).end()


def _check_query(after_position: int, journal_filter: JournalFilter) -> None:
    violations = position_violations(after_position, "after_position")
    violations += filter_violations(journal_filter, "filter.")
    if violations:
        raise InvalidArgument(violations)


def build_journal_engine(
    database: AsyncEngine,
    coordination: Coordination,
    settings: EventStoreSettings,
    clock: Clock | None = None,
) -> JournalEngine:
    """The journal engine over the event store's database (what service.py wires)."""
    return JournalEngine(SqlJournalStore(database), coordination, settings, clock)
