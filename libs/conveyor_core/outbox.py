"""A transactional outbox, and the relay that delivers it to the event store's journal.

A service that must tell the journal about a change writes an outbox row in
the same transaction as the change, so the row exists if and only if the
change committed. `OutboxRelay` then delivers the rows at least once:

1. claim a batch of undelivered rows, oldest first (`OutboxSource.claim`);
2. append them to the journal over gRPC (`JournalSink.append`, i.e.
   `JournalService.AppendJournalRecords`);
3. mark them delivered, only after the append succeeded
   (`OutboxBatch.mark_delivered`);
4. apart from the passes, every `CONVEYOR_OUTBOX_PURGE_INTERVAL_SECONDS`, delete the rows
   delivered longer ago than `CONVEYOR_OUTBOX_PURGE_AFTER_SECONDS` (`purge_delivered`):
   the journal holds them, and an outbox that kept them would grow without end.

A crash between 2 and 3 delivers the batch again. That is harmless because
record ids are deterministic (a service derives them from its row, e.g.
`queue/<seq>`) and the journal appends by id idempotently: readers see each
record exactly once, at the position its first append got.

When an append fails for a reason that may pass (the journal unreachable, a
timeout, ...), the relay logs, backs off exponentially with jitter (`Backoff`)
and retries the same rows; nothing is skipped. One bad row never stops the
relay (conveyor_core.poison): a row the source cannot turn into a record
(`OutboxBatch.unreadable`), and a record the journal refuses (INVALID_ARGUMENT
and the other codes in `REFUSALS`, or a value that cannot be encoded), are
quarantined: logged at ERROR with the cause, counted in
`conveyor.<service>.poisoned_items` (label `loop`: "outbox"), marked as
handled with the batch and never retried. A refused batch is split in halves
until the refused records are found, so the rest are delivered, in order. It waits for work
on the coordination channel the source names, notified by `OutboxNotifier`
after writes (in this process or any replica), with a poll as the safety net.
Several replicas may run relays over one database: the source decides how
they share the rows (the queue's uses `FOR UPDATE SKIP LOCKED` on PostgreSQL
and keeps each work order's records in order).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import grpc
from google.protobuf import timestamp_pb2
from opentelemetry import trace

from conveyor.events.v1 import messages_pb2, service_pb2, service_pb2_grpc
from conveyor_core.clock import to_micros
from conveyor_core.context import correlation_scope
from conveyor_core.coordination import Coordination
from conveyor_core.grpc import create_channel
from conveyor_core.poison import record_poisoned
from conveyor_core.retry import backoff_seconds
from conveyor_core.settings import CoreSettings
from conveyor_core.tasks import cancel_and_wait

log = logging.getLogger(__name__)
tracer = trace.get_tracer("conveyor.outbox")

#: Full name of the gRPC service a relay delivers to.
JOURNAL_SERVICE = service_pb2.DESCRIPTOR.services_by_name["JournalService"].full_name
_APPEND_METHOD = f"{JOURNAL_SERVICE}/AppendJournalRecords"
#: Seconds before a relay looks again at rows it held back (see `OutboxBatch.claimed`).
HELD_BACK_RECHECK = 0.02
#: Codes by which the journal refuses what was sent: retrying the same records cannot help.
REFUSALS = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,  # e.g. a message past the journal's size limit
    }
)
#: The `loop` label of a relay in conveyor.<service>.poisoned_items.
OUTBOX_LOOP = "outbox"


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    """One journal record to deliver; `id` must be deterministic for the row it came from."""

    id: str
    type: str
    namespace: str
    time: datetime
    subjects: Mapping[str, str] = field(default_factory=dict)
    correlation_id: str = ""
    trace_id: str = ""
    attributes: Mapping[str, str] = field(default_factory=dict)


class OutboxBatch(Protocol):
    """Rows claimed by one relay pass.

    Attributes:
        records: what to deliver now, in order.
        claimed: how many rows the claim took (`records` may hold fewer, when
            some must wait for earlier rows another relay is delivering).
        unreadable: rows the claim could not turn into records (a name for
            each, and why); not in `records`, and marked with them. Optional:
            a batch without it has none.
    """

    @property
    def records(self) -> Sequence[OutboxRecord]: ...

    @property
    def claimed(self) -> int: ...

    async def mark_delivered(self) -> None:
        """Record `records` and `unreadable` as handled; called only after the append
        succeeded (or its refused records were quarantined)."""
        ...


class OutboxSource(Protocol):
    """A service's outbox table."""

    #: Coordination channel notified when rows are written (see `OutboxNotifier`).
    channel: str

    def claim(self, limit: int) -> AbstractAsyncContextManager[OutboxBatch]:
        """Claim up to `limit` undelivered rows, oldest first, for the life of the context.

        Leaving the context without `mark_delivered()` (an exception, or a
        crash) leaves them undelivered, to be claimed again.
        """
        ...

    async def purge_delivered(self, older_than_seconds: float, limit: int) -> int:
        """Delete up to `limit` rows delivered more than `older_than_seconds` ago (by the
        source's clock), oldest first; return how many went. Undelivered rows are never
        deleted. A source whose rows are a record in their own right (the queue's order
        history) keeps them and returns 0."""
        ...


class JournalSink(Protocol):
    async def append(self, records: Sequence[OutboxRecord]) -> None:
        """Append `records` (idempotent by id); raise if they may not have been stored."""
        ...


class GrpcJournalSink:
    """Appends to a JournalService over gRPC; the channel opens on first use."""

    def __init__(
        self, address: str, *, settings: CoreSettings | None = None, timeout: float = 10.0
    ) -> None:
        self.address = address
        self._settings = settings
        self._timeout = timeout
        self._channel: grpc.aio.Channel | None = None
        self._stub: service_pb2_grpc.JournalServiceAsyncStub | None = None

    async def append(self, records: Sequence[OutboxRecord]) -> None:
        if self._stub is None:
            channel = create_channel(
                self.address, settings=self._settings, idempotent_methods=[_APPEND_METHOD]
            )
            self._channel, self._stub = channel, service_pb2_grpc.JournalServiceStub(channel)
        request = service_pb2.AppendJournalRecordsRequest(records=[_to_pb(r) for r in records])
        await self._stub.AppendJournalRecords(request, timeout=self._timeout)

    async def close(self) -> None:
        channel, self._channel, self._stub = self._channel, None, None
        if channel is not None:
            await channel.close()


def _to_pb(record: OutboxRecord) -> messages_pb2.JournalRecord:
    seconds, micros = divmod(to_micros(record.time), 1_000_000)
    return messages_pb2.JournalRecord(
        id=record.id,
        type=record.type,
        namespace=record.namespace,
        subjects=record.subjects,
        correlation_id=record.correlation_id,
        trace_id=record.trace_id,
        time=timestamp_pb2.Timestamp(seconds=seconds, nanos=micros * 1000),
        attributes=record.attributes,
    )


def trace_id_of(traceparent: str) -> str:
    """The trace id of a W3C `traceparent` ("00-<trace id>-<span id>-<flags>"), or ""."""
    parts = traceparent.split("-")
    if len(parts) == 4 and len(parts[1]) == 32 and parts[1] != "0" * 32:
        return parts[1].lower()
    return ""


@dataclass
class Backoff:
    """A relay's delays after consecutive failures: conveyor_core.retry's backoff, counted."""

    initial: float = 0.2
    maximum: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.2
    rng: random.Random = field(default_factory=random.Random)
    failures: int = 0

    def next_delay(self) -> float:
        """The delay before the next retry; each call counts one more failure."""
        self.failures += 1
        return backoff_seconds(
            self.failures,
            initial=self.initial,
            coefficient=self.multiplier,
            maximum=self.maximum,
            jitter=self.jitter,
            uniform=self.rng.uniform,
        )

    def reset(self) -> None:
        self.failures = 0


class OutboxNotifier:
    """Wakes relays after outbox rows were written, coalescing bursts into few notifies.

    `poke()` is cheap and synchronous: the first poke of a burst notifies at
    once; later ones within `min_interval` seconds share one more notify at
    the end of it. So a busy writer costs at most one notify (a Redis PUBLISH)
    per interval, not one per transaction. Disabled until `enabled` is set (no
    relay configured: no notifies).
    """

    def __init__(
        self, coordination: Coordination, channel: str, *, min_interval: float = 0.01
    ) -> None:
        self.enabled = False
        self._coordination = coordination
        self._channel = channel
        self._min_interval = min_interval
        self._pending = False
        self._task: asyncio.Task[None] | None = None

    def poke(self) -> None:
        if not self.enabled:
            return
        self._pending = True
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._notify_pending(), name=f"outbox-notify:{self._channel}"
            )

    async def _notify_pending(self) -> None:
        while self._pending:
            self._pending = False
            try:
                await self._coordination.notify(self._channel)
            except Exception:
                log.warning("outbox: wake-up on %r not sent", self._channel, exc_info=True)
            await asyncio.sleep(self._min_interval)  # pokes meanwhile share the next notify

    async def close(self) -> None:
        self.enabled = False
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)


@dataclass
class RelayStats:
    """What a relay did since it was built (across restarts)."""

    passes: int = 0  # completed claim-append-mark passes, empty ones included
    delivered: int = 0
    batches: int = 0
    failures: int = 0
    poisoned: int = 0  # rows or records quarantined (unreadable, or refused by the journal)
    purged: int = 0  # delivered rows deleted once past the purge age


class OutboxRelay:
    """Delivers a source's rows to a journal sink, at least once, in batches.

    `start()` and `stop()` are idempotent; `stop()` before `start()` does
    nothing, and a stopped relay may start again. Stopping mid-batch leaves the
    batch undelivered (or delivered but unmarked), to be delivered again.
    """

    def __init__(
        self,
        source: OutboxSource,
        sink: JournalSink,
        coordination: Coordination,
        *,
        batch_size: int = 500,
        poll_seconds: float = 1.0,
        backoff: Backoff | None = None,
        name: str = "outbox",
        service: str = "",
        purge: PurgeSettings | None = None,
    ) -> None:
        self.source = source
        self.sink = sink
        self.name = name
        #: Names the poisoned-items metric, conveyor.<service>.poisoned_items (default: name).
        self.service = service or name
        self.stats = RelayStats()
        self._coordination = coordination
        self._batch_size = batch_size
        self._poll_seconds = poll_seconds
        self._backoff = backoff or Backoff()
        self._purge = purge or PurgeSettings()
        self._task: asyncio.Task[None] | None = None
        self._purging: asyncio.Task[None] | None = None
        self._held_back = 0

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"outbox-relay:{self.name}")
        if self._purging is None and self._purge.after_seconds > 0:
            self._purging = asyncio.create_task(
                self._purge_forever(), name=f"outbox-purge:{self.name}"
            )

    async def stop(self) -> None:
        task, self._task = self._task, None
        purging, self._purging = self._purging, None
        for running in (task, purging):
            if running is not None:
                await cancel_and_wait(running)

    async def purge_once(self) -> int:
        """Delete the rows delivered longer ago than the purge age, a batch per statement
        until none is left; return how many went."""
        purged, limit = 0, self._purge.batch
        while True:
            gone = await self.source.purge_delivered(self._purge.after_seconds, limit)
            purged += gone
            self.stats.purged += gone
            if gone < limit:
                return purged

    async def _purge_forever(self) -> None:
        while True:
            await asyncio.sleep(self._purge.interval_seconds)
            try:
                await self.purge_once()
            except Exception as error:  # the next interval tries again; rows only wait
                log.warning("outbox %s: purge of delivered rows failed: %s", self.name, error)

    async def deliver_once(self) -> int:
        """Claim, append and mark one batch; return how many rows the claim took."""
        async with self.source.claim(self._batch_size) as batch:
            records = batch.records
            # Optional: a source that never fails to read its rows need not say so.
            unreadable: Sequence[tuple[str, BaseException]] = getattr(batch, "unreadable", ())
            for item, error in unreadable:
                self._poisoned(item, error)
            if records:
                with (
                    correlation_scope(),
                    tracer.start_as_current_span(
                        "outbox.deliver",
                        attributes={"conveyor.outbox": self.name, "conveyor.records": len(records)},
                    ),
                ):
                    refused = await self._append(records)
                await batch.mark_delivered()
                self.stats.delivered += len(records) - refused
                self.stats.batches += 1
            elif unreadable:
                await batch.mark_delivered()
            claimed = batch.claimed
            self._held_back = claimed - len(records)
        self.stats.passes += 1
        return claimed

    async def _append(self, records: Sequence[OutboxRecord]) -> int:
        """Append `records`; a refused batch is split until each refused record is found and
        quarantined (appends are idempotent by id: re-sending a half is harmless). Returns how
        many were refused; raises on failures that may pass."""
        try:
            await self.sink.append(records)
            return 0
        except Exception as error:
            if not _is_refusal(error):
                raise
            if len(records) == 1:
                self._poisoned(f"journal record {records[0].id}", error)
                return 1
            half = len(records) // 2
            return await self._append(records[:half]) + await self._append(records[half:])

    def _poisoned(self, item: str, error: BaseException) -> None:
        self.stats.poisoned += 1
        record_poisoned(self.service, OUTBOX_LOOP, item, error, "skipped")

    async def _run(self) -> None:
        # Registered before the first claim: a notify landing after an empty
        # claim is kept for the wait that follows it.
        async with self._coordination.listen([self.source.channel]) as listener:
            while True:
                try:
                    claimed = await self.deliver_once()
                except Exception as error:
                    await self._after_failure(error)
                    continue
                self._backoff.reset()
                if claimed < self._batch_size:
                    # Rows held back behind another relay's batch go as soon as it is
                    # done, which sends no wake-up: look again shortly.
                    await listener.wait(
                        HELD_BACK_RECHECK if self._held_back else self._poll_seconds
                    )

    async def _after_failure(self, error: Exception) -> None:
        self.stats.failures += 1
        delay = self._backoff.next_delay()
        log.warning(
            "outbox %s: delivery failed (%s); retrying in %.2fs (failure %d in a row)",
            self.name,
            _describe(error),
            delay,
            self._backoff.failures,
            exc_info=self._backoff.failures == 1,
        )
        await asyncio.sleep(delay)


def _is_refusal(error: Exception) -> bool:
    """Whether the journal refused what was sent (or it could not be encoded)."""
    if isinstance(error, grpc.aio.AioRpcError):
        return error.code() in REFUSALS
    # Building the request: a string that is not UTF-8, a time past year 9999, ...
    return isinstance(error, (ValueError, TypeError, OverflowError, UnicodeError))


def _describe(error: Exception) -> str:
    if isinstance(error, grpc.aio.AioRpcError):
        return f"{error.code().name}: {error.details()}"
    return f"{type(error).__name__}: {error}"


@dataclass(frozen=True)
class PurgeSettings:
    """When a relay deletes delivered rows (CoreSettings.outbox_purge_*): `after_seconds`
    past their delivery, checked every `interval_seconds`, `batch` rows per statement.
    `after_seconds` 0: never."""

    after_seconds: float = 0.0
    interval_seconds: float = 60.0
    batch: int = 5000

    @classmethod
    def of(cls, core: CoreSettings) -> PurgeSettings:
        return cls(
            core.outbox_purge_after_seconds,
            core.outbox_purge_interval_seconds,
            core.outbox_purge_batch,
        )


@dataclass(frozen=True)
class RelaySettings:
    """How a service's journal outbox is relayed (each service names these in its settings)."""

    batch_size: int = 500
    poll_seconds: float = 1.0
    backoff_initial_seconds: float = 0.2
    backoff_max_seconds: float = 30.0
    append_timeout_seconds: float = 10.0

    @classmethod
    def of(cls, service_settings: object) -> RelaySettings:
        """From a service's `relay_batch_size`, `relay_poll_seconds`, ... settings."""
        return cls(
            **{
                name: getattr(service_settings, f"relay_{name}")
                for name in cls.__dataclass_fields__
            }
        )


class JournalDelivery:
    """A service's journal outbox delivered to the JournalService at an address.

    The relay and its gRPC sink as one unit, so that every service wires its
    outbox the same way: `start(address)` once the address is known (from
    settings, or the Platform's `attach_journal`), `stop()` on shutdown. Start
    is idempotent (the first address wins until stopped); a stopped delivery
    may start again. `relay` is the running OutboxRelay (None when stopped).
    """

    def __init__(
        self,
        source: OutboxSource,
        coordination: Coordination,
        core: CoreSettings,
        settings: RelaySettings,
        *,
        name: str,
    ) -> None:
        self._source = source
        self._coordination = coordination
        self._core = core
        self._settings = settings
        self._name = name
        self.relay: OutboxRelay | None = None
        self._sink: GrpcJournalSink | None = None

    async def start(self, address: str) -> None:
        if self.relay is not None:
            return
        s = self._settings
        self._sink = GrpcJournalSink(address, settings=self._core, timeout=s.append_timeout_seconds)
        self.relay = OutboxRelay(
            self._source,
            self._sink,
            self._coordination,
            batch_size=s.batch_size,
            poll_seconds=s.poll_seconds,
            backoff=Backoff(s.backoff_initial_seconds, s.backoff_max_seconds),
            name=self._name,
            purge=PurgeSettings.of(self._core),
        )
        await self.relay.start()
        log.info("%s outbox relay delivering to the journal at %s", self._name, address)

    async def stop(self, *, flush: bool = False) -> None:
        """Stop relaying. With `flush`, first try once (bounded by the append timeout) to
        deliver what is pending, e.g. the last records written during a drain; what
        fails stays in the outbox for the next start or another replica."""
        relay, sink, self.relay, self._sink = self.relay, self._sink, None, None
        if relay is not None:
            await relay.stop()
            if flush:
                try:
                    await asyncio.wait_for(
                        relay.deliver_once(), self._settings.append_timeout_seconds
                    )
                except Exception as error:  # best effort: the rows stay in the outbox
                    log.info("%s outbox not flushed at stop: %s", self._name, error)
        if sink is not None:
            await sink.close()
