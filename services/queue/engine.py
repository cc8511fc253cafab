"""The queue engine: what each RPC does, over a store, a coordination backend and a clock.

The servicer (api/) only translates protobuf to these calls. The engine
applies defaults and limits, wakes long-polling leasers, keeps rate counters,
runs the expiry sweeper, and gives every order's steps spans in the order's
own trace.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from opentelemetry import trace
from opentelemetry.propagate import inject

from conveyor_core.clock import Clock, SystemClock
from conveyor_core.context import get_correlation_id
from conveyor_core.coordination import Coordination
from conveyor_core.errors import FieldViolation, InvalidArgument
from conveyor_core.tasks import cancel_and_wait
from conveyor_core.telemetry import trace_context_of
from conveyor_queue import metrics
from conveyor_queue.domain.commands import FailAttempt, RedriveRequest
from conveyor_queue.domain.model import (
    CompletedWorkOrder,
    LeasedWorkOrder,
    Position,
    Progress,
    QueueConfig,
    QueueRef,
    QueueStats,
    RateLimit,
    Redrive,
    WorkOrder,
    WorkOrderEvent,
    WorkOrderRef,
    WorkOrderSpec,
    WorkOrderState,
)
from conveyor_queue.domain.retry import RetryPlan
from conveyor_queue.domain.validation import (
    raise_if,
    spec_violations,
    submit_context_violations,
)
from conveyor_queue.hints import DrainedQueues, DueTimes, delayed_channel
from conveyor_queue.settings import QueueSettings
from conveyor_queue.store.base import (
    CancelParams,
    CompleteParams,
    FailParams,
    HeartbeatParams,
    LeaseParams,
    ListParams,
    NewWorkOrder,
    RedriveParams,
    SubmitResult,
    WorkOrderStore,
)

log = logging.getLogger(__name__)
tracer = trace.get_tracer("conveyor.queue")


@dataclass(frozen=True, slots=True)
class SubmitItem:
    """One order to submit.

    `traceparent` and `correlation_id`, when set (batch items), are this order's own and
    override the call's; `field_prefix` locates the item in the request ("requests[3].").
    """

    queue: QueueRef
    spec: WorkOrderSpec
    field_prefix: str = ""
    traceparent: str = ""
    correlation_id: str = ""


@dataclass(frozen=True, slots=True)
class LeaseRequest:
    namespace: str
    queues: tuple[str, ...]
    max_work_orders: int
    wait: timedelta
    lease_duration: timedelta | None
    worker: str


class CoordinationGate:
    """TokenGate over the coordination backend's shared token buckets."""

    def __init__(self, coordination: Coordination) -> None:
        self._coordination = coordination

    async def take(self, bucket: str, requested: int, limit: RateLimit) -> int:
        return await self._coordination.rate_limit_take(
            bucket, requested, limit.per_second, limit.bucket
        )


def _traceparent() -> str:
    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier.get("traceparent", "")


class QueueEngine:
    def __init__(
        self,
        store: WorkOrderStore,
        coordination: Coordination,
        settings: QueueSettings,
        clock: Clock | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock or SystemClock()
        self._coordination = coordination
        self._gate = CoordinationGate(coordination)
        self._sweeper: asyncio.Task[None] | None = None
        self._flusher: asyncio.Task[None] | None = None
        # Rate counters are summed here and flushed to the shared counters about
        # once a second: a coordination round trip per submit or lease would be
        # a large share of the cost of a single-order call.
        self._pending_counts: dict[tuple[str, int], int] = {}
        self._due = DueTimes(
            store.work_order_next_available, coordination, settings.poll_interval_seconds
        )
        self._drained = DrainedQueues(coordination, settings.poll_interval_seconds)

    # -- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep_forever(), name="queue-sweeper")
            self._flusher = asyncio.create_task(self._flush_forever(), name="queue-counters")

    async def stop(self) -> None:
        tasks, self._sweeper, self._flusher = (self._sweeper, self._flusher), None, None
        for task in tasks:
            if task is not None:
                await cancel_and_wait(task)
        with contextlib.suppress(Exception):
            await self.flush_counters()
        await self._due.close()
        await self._drained.close()

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.counter_flush_seconds)
            try:
                await self.flush_counters()
            except Exception:
                log.warning("queue rate counters not flushed; will retry", exc_info=True)

    async def _sweep_forever(self) -> None:
        while True:
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("queue sweeper pass failed; retrying")
            await asyncio.sleep(self.settings.sweep_interval_seconds)

    async def sweep(self) -> int:
        """Expire leases and deadlines due now; returns how many orders changed."""
        now = self.clock.now()
        changed = await self.store.work_order_expire_leases(now, self.settings.sweep_batch)
        changed += await self.store.work_order_expire_deadlines(now, self.settings.sweep_batch)
        for order in changed:
            log.info(
                "work order %s expired (%s) -> %s",
                order.id,
                order.last_timeout_kind,
                order.state,
                extra={"work_order_id": str(order.id), "correlation_id": order.correlation_id},
            )
        metrics.expired(changed)
        requeued = [o for o in changed if o.state is WorkOrderState.QUEUED]
        await self._wake_delayed(requeued, now)
        await self._wake(_per_queue(requeued))
        return len(changed)

    # -- submit -----------------------------------------------------------------

    def with_defaults(self, spec: WorkOrderSpec) -> WorkOrderSpec:
        policy = spec.retry_policy
        if policy.maximum_attempts == 0:  # unset; a negative one is refused, not defaulted
            policy = replace(policy, maximum_attempts=self.settings.default_max_attempts)
        return replace(spec, retry_policy=policy)

    async def submit(self, items: Sequence[SubmitItem]) -> list[SubmitResult]:
        if len(items) > self.settings.max_batch_size:
            raise InvalidArgument(
                FieldViolation(
                    "requests",
                    f"at most {self.settings.max_batch_size} per batch, got {len(items)}",
                )
            )
        violations: list[FieldViolation] = []
        specs = []
        for item in items:
            spec = self.with_defaults(item.spec)
            violations += spec_violations(spec, self.settings, f"{item.field_prefix}work_order.")
            violations += submit_context_violations(
                item.traceparent, item.correlation_id, item.field_prefix
            )
            specs.append(spec)
        raise_if(violations)
        correlation_id, traceparent = get_correlation_id() or "", _traceparent()
        new = [
            NewWorkOrder(
                uuid.uuid4(),
                item.queue,
                spec,
                item.correlation_id or correlation_id,
                item.traceparent or traceparent,
            )
            for item, spec in zip(items, specs, strict=True)
        ]
        now = self.clock.now()
        results = await self.store.work_order_insert_many(new, now)
        # In each order's own trace: a batch of orders from many traces shows in every one.
        self._trace_each(
            "work_order.submitted", [r.work_order for r in results if not r.already_exists]
        )
        new_orders = [r.work_order for r in results if not r.already_exists]
        metrics.submitted(new_orders)
        added = _per_queue(new_orders)
        await self._wake_delayed(new_orders, now)
        await self._wake(added)  # one parked leaser per new order, not all of them
        await self._count("add", added, now)
        return results

    # -- lease and lease holders ------------------------------------------------

    async def lease(self, request: LeaseRequest) -> list[LeasedWorkOrder]:
        s = self.settings
        loop = asyncio.get_running_loop()
        give_up = loop.time() + min(request.wait.total_seconds(), s.max_wait_seconds)
        lease_duration = request.lease_duration or timedelta(seconds=s.default_lease_seconds)
        channels = [QueueRef(request.namespace, q).channel for q in request.queues]
        params = LeaseParams(
            request.namespace,
            request.queues,
            request.max_work_orders,
            lease_duration,
            request.worker,
            self.clock.now(),
            s.fair_scan_limit,
        )
        # A waiter: a submit wakes as many parked lease calls as it added orders.
        async with self._coordination.listen(channels, waiter=True) as listener:
            # Nothing announced since a statement drained these queues, and nothing
            # delayed fell due: the first statement would find nothing (hints.py).
            skip = await self._drained.drained(
                request.namespace, request.queues
            ) and not await self._due.may_be_due(request.namespace, request.queues, params.now)
            while True:
                leased = [] if skip else await self._lease_once(params)
                skip = False
                remaining = give_up - loop.time()
                if leased or remaining <= 0:
                    break
                pause = min(remaining, s.poll_interval_seconds)
                due = await self._due.next_due(request.namespace, request.queues, params.now)
                if due is not None:
                    pause = min(pause, max((due - params.now).total_seconds(), 0.001))
                await listener.wait(pause)
                params = replace(params, now=self.clock.now())
        if leased:
            orders = [lw.work_order for lw in leased]
            self._trace_each("work_order.leased", orders)
            metrics.dispatched(orders, params.now)
            await self._count("dispatch", _per_queue(orders), self.clock.now())
        return leased

    async def _lease_once(self, params: LeaseParams) -> list[LeasedWorkOrder]:
        """One lease statement; remembers whether it left nothing available behind."""
        mark = await self._drained.before_lease(params.namespace, params.queues)
        leased = await self.store.work_order_lease_available(params, self._gate)
        drained = len(leased) < params.limit and await self._plain(params)
        await self._drained.after_lease(params.namespace, params.queues, mark, drained)
        return leased

    async def _plain(self, params: LeaseParams) -> bool:
        """No flow control: a short answer then means nothing more was available."""
        for queue in params.queues:
            config = await self.store.queue_get_cached(QueueRef(params.namespace, queue))
            if config.flow_controlled or config.paused:
                return False
        return True

    async def heartbeat(
        self,
        ref: WorkOrderRef,
        token: str,
        lease_duration: timedelta | None,
        progress: Progress | None,
    ) -> WorkOrder:
        if (
            lease_duration is not None
            and lease_duration.total_seconds() > self.settings.max_lease_seconds
        ):
            raise InvalidArgument(
                FieldViolation("lease_duration", f"at most {self.settings.max_lease_seconds}s")
            )
        return await self.store.work_order_heartbeat(
            HeartbeatParams(ref, token, lease_duration, progress, self.clock.now())
        )

    async def complete(
        self, items: Sequence[CompleteParams], brief: bool = False
    ) -> list[WorkOrder | CompletedWorkOrder | Exception]:
        """Complete each item; `brief`: the caller needs only which ones succeeded."""
        if len(items) > self.settings.max_batch_size:
            raise InvalidArgument(
                FieldViolation(
                    "requests",
                    f"at most {self.settings.max_batch_size} per batch, got {len(items)}",
                )
            )
        violations = [
            FieldViolation(
                f"requests[{i}].result.data",
                f"exceeds the limit of {self.settings.max_payload_bytes} bytes",
            )
            for i, item in enumerate(items)
            if len(item.result.data) > self.settings.max_payload_bytes
        ]
        raise_if(violations)
        results = await self.store.work_order_complete_many(items, self.clock.now(), brief)
        done = [r for r in results if not isinstance(r, Exception)]
        self._trace_each("work_order.completed", done)
        metrics.completed(done)
        await self._wake_if_capped(_per_queue(done))
        return results

    async def fail(self, command: FailAttempt) -> WorkOrder:
        now = self.clock.now()
        plan = RetryPlan(command.failure, now, command.retry_delay)
        order = await self.store.work_order_fail(FailParams(command.ref, command.lease_token, plan))
        self._trace_each("work_order.failed", [order])
        metrics.failed(order)
        await self._wake_delayed([order], now)
        # One leaser: for the retry (it recomputes its pause if delayed), or for the freed slot.
        await self._wake({QueueRef(order.namespace, order.queue): 1})
        return order

    async def cancel(self, ref: WorkOrderRef, reason: str, actor: str) -> WorkOrder:
        order = await self.store.work_order_cancel(
            CancelParams(ref, reason, actor, self.clock.now())
        )
        self._trace_each("work_order.cancelled", [order])
        return order

    # -- reads --------------------------------------------------------------------

    async def get(self, ref: WorkOrderRef) -> WorkOrder:
        return await self.store.work_order_get(ref)

    async def list(self, params: ListParams) -> list[tuple[int, WorkOrder]]:
        return await self.store.work_order_list(params)

    async def events(
        self, ref: WorkOrderRef, after_seq: int, limit: int
    ) -> builtins.list[WorkOrderEvent]:
        return await self.store.work_order_events_list(ref, after_seq, limit)

    async def position(self, ref: WorkOrderRef) -> Position:
        order = await self.store.work_order_get(ref)
        now = self.clock.now()
        rate = (await self._rates(QueueRef(order.namespace, order.queue), now))[1]
        if order.state is not WorkOrderState.QUEUED:
            return Position(order.state, 0, rate, None)
        ahead = await self.store.work_order_count_ahead(order, now)
        start = max(now, order.available_at)
        estimate = start + timedelta(seconds=ahead / rate) if rate > 0 else None
        return Position(order.state, ahead, rate, estimate)

    async def stats(self, ref: QueueRef) -> QueueStats:
        now = self.clock.now()
        window = timedelta(seconds=self.settings.stats_window_seconds)
        depth = await self.store.queue_depth(ref)
        add_rate, dispatch_rate = await self._rates(ref, now)
        samples = sorted(
            await self.store.work_order_wait_samples(
                ref, now - window, self.settings.stats_wait_sample
            )
        )
        percentiles = {p: _percentile(samples, p) for p in (50, 90, 99)} if samples else {}
        oldest = depth.oldest_available_at
        return QueueStats(
            queue=ref,
            depth=depth.by_state,
            in_flight=depth.in_flight,
            oldest_queued_age=max(now - oldest, timedelta(0)) if oldest else None,
            add_rate_per_second=add_rate,
            dispatch_rate_per_second=dispatch_rate,
            wait_time_percentiles=percentiles,
            window=window,
        )

    # -- queues and dead letters ----------------------------------------------------

    async def queue_get(self, ref: QueueRef) -> QueueConfig:
        return await self.store.queue_get(ref)

    async def queue_update(self, config: QueueConfig, fields: frozenset[str]) -> QueueConfig:
        updated = await self.store.queue_upsert(config, fields, self.clock.now())
        await self._wake({updated.ref: None})  # resumed, or more room: every leaser re-checks
        return updated

    async def queue_set_paused(self, ref: QueueRef, paused: bool) -> QueueConfig:
        return await self.queue_update(
            QueueConfig(ref.namespace, ref.queue, paused=paused), frozenset({"paused"})
        )

    async def queue_list(
        self, namespace: str, after: str, limit: int
    ) -> builtins.list[QueueConfig]:
        return await self.store.queue_list(namespace, after, limit)

    async def redrive(self, request: RedriveRequest) -> Redrive:
        r = request
        params = RedriveParams(
            r.queue,
            r.error_type,
            r.dead_after,
            r.max_work_orders,
            r.reason,
            r.requested_by,
            r.request_id,
            self.settings.redrive_chunk_size,
            self.clock.now(),
        )
        redrive = await self.store.redrive_run(params)
        log.info(
            "redrive %s of %s by %r (%s): %d orders",
            redrive.id,
            params.queue.name,
            redrive.requested_by,
            redrive.reason,
            redrive.redriven_count,
        )
        metrics.redriven(params.queue.namespace, params.queue.queue, redrive.redriven_count)
        await self._coordination.notify(delayed_channel(params.queue))
        await self._wake({params.queue: redrive.redriven_count})
        return redrive

    async def redrive_list(self, ref: QueueRef, offset: int, limit: int) -> builtins.list[Redrive]:
        return await self.store.redrive_list(ref, offset, limit)

    # -- helpers ------------------------------------------------------------------

    async def _wake(self, waiters: Mapping[QueueRef, int | None]) -> None:
        """Wake, per queue, that many parked lease calls (None: all of them)."""
        for ref, count in waiters.items():
            if count is None or count > 0:
                await self._coordination.notify(ref.channel, count)

    async def _wake_delayed(self, orders: Sequence[WorkOrder], now: datetime) -> None:
        """Tell lease calls that an order now waits for a later instant (see due.py).

        Sent before the ordinary wake-up, so a woken leaser never reads a cached
        instant that this change made wrong.
        """
        refs = {
            QueueRef(o.namespace, o.queue)
            for o in orders
            if o.state is WorkOrderState.QUEUED and o.available_at > now
        }
        for ref in refs:
            await self._coordination.notify(delayed_channel(ref))

    async def _wake_if_capped(self, freed: Mapping[QueueRef, int]) -> None:
        """Completing frees capacity: wake leasers of flow-controlled queues only, one per slot."""
        for ref, count in freed.items():
            if (await self.store.queue_get_cached(ref)).flow_controlled:
                await self._coordination.notify(ref.channel, count)

    async def _count(self, what: str, counts: dict[QueueRef, int], now: datetime) -> None:
        minute = int(now.timestamp() // 60)
        for ref, n in counts.items():
            key = (f"stats:{ref.namespace}/{ref.queue}:{what}", minute)
            self._pending_counts[key] = self._pending_counts.get(key, 0) + n

    async def flush_counters(self) -> None:
        """Add this replica's pending counts to the shared per-minute counters."""
        pending, self._pending_counts = self._pending_counts, {}
        ttl = self.settings.stats_window_seconds + 120
        items = list(pending.items())
        for done, ((name, minute), n) in enumerate(items):
            try:
                await self._coordination.counter_add(f"{name}:{minute}", n, ttl=ttl)
            except Exception:
                for key, left in items[done:]:  # keep what was not flushed for the next try
                    self._pending_counts[key] = self._pending_counts.get(key, 0) + left
                raise

    async def _rates(self, ref: QueueRef, now: datetime) -> tuple[float, float]:
        """Submitted and leased per second over the stats window (whole minutes)."""
        await self.flush_counters()
        minutes = self.settings.stats_window_seconds // 60
        current = int(now.timestamp() // 60)
        buckets = range(current - minutes + 1, current + 1)
        names = [
            f"stats:{ref.namespace}/{ref.queue}:{what}:{m}"
            for what in ("add", "dispatch")
            for m in buckets
        ]
        values = await self._coordination.counters_get(names)
        elapsed = (minutes - 1) * 60 + (now.timestamp() % 60) or 1.0
        return sum(values[:minutes]) / elapsed, sum(values[minutes:]) / elapsed

    def _trace_each(self, name: str, orders: Sequence[WorkOrder | CompletedWorkOrder]) -> None:
        """One span per order, parented in the order's own trace (from its submit)."""
        if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
            return  # no tracer provider installed: nothing would record these spans
        for order in orders:  # started and ended at once, never made current: the cheap way
            tracer.start_span(
                name,
                context=trace_context_of(order.traceparent),
                attributes={
                    "conveyor.work_order.id": str(order.id),
                    "conveyor.queue": f"{order.namespace}/{order.queue}",
                    "conveyor.work_order.state": order.state.value,
                    "conveyor.work_order.attempt": order.attempt,
                    "conveyor.correlation_id": order.correlation_id,
                },
            ).end()


def _per_queue(orders: Sequence[WorkOrder | CompletedWorkOrder]) -> dict[QueueRef, int]:
    """How many of `orders` each queue holds."""
    counts: dict[QueueRef, int] = {}
    for order in orders:
        ref = QueueRef(order.namespace, order.queue)
        counts[ref] = counts.get(ref, 0) + 1
    return counts


def _percentile(sorted_samples: list[timedelta], p: int) -> timedelta:
    index = min(len(sorted_samples) - 1, max(0, math.ceil(p / 100 * len(sorted_samples)) - 1))
    return sorted_samples[index]
