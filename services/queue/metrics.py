"""The queue's metrics: flow counters, wait time, lease expiries, redrives, and gauges.

Labels: `namespace` and `queue` (operator-chosen names, bounded by the queues
an operator creates), `state` (queued, leased, dead), `kind` (a TimeoutKind:
schedule_to_start, start_to_close, heartbeat, lease_expired). Never an order
id, a correlation id or a label of an order. Documented in docs/observability.md.

The gauges (depth, in flight, oldest queued age) come from one grouped query
(store/gauges.py) behind a `conveyor_core.gauges.SnapshotGauges` cache:
`CONVEYOR_QUEUE_METRICS_REFRESH_SECONDS`, `..._METRICS_QUERY_TIMEOUT_SECONDS`,
`..._METRICS_MAX_QUEUES`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from conveyor_core.gauges import observe
from conveyor_core.metrics import announce as metrics_announce
from conveyor_core.metrics import meter
from conveyor_queue.domain.model import CompletedWorkOrder, WorkOrder, WorkOrderState

_meter = meter(__name__)

#: Seconds an order waited between becoming available and being leased.
WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)

SUBMITTED = _meter.create_counter(
    "conveyor.queue.submitted", unit="{order}", description="Orders accepted (new, not replays)."
)
DISPATCHED = _meter.create_counter(
    "conveyor.queue.dispatched", unit="{order}", description="Orders leased to a worker."
)
COMPLETED = _meter.create_counter(
    "conveyor.queue.completed", unit="{order}", description="Orders that succeeded."
)
FAILED = _meter.create_counter(
    "conveyor.queue.failed",
    unit="{order}",
    description="Attempts reported failed (outcome: retried, failed, dead).",
)
DEAD_LETTERED = _meter.create_counter(
    "conveyor.queue.dead_lettered",
    unit="{order}",
    description="Orders moved to the dead letters (attempts exhausted, timeouts).",
)
LEASE_EXPIRIES = _meter.create_counter(
    "conveyor.queue.lease_expiries",
    unit="{order}",
    description="Leases and deadlines the sweeper expired, by timeout kind.",
)
REDRIVEN = _meter.create_counter(
    "conveyor.queue.redriven", unit="{order}", description="Dead letters put back in the queue."
)
WAIT_TIME = _meter.create_histogram(
    "conveyor.queue.wait_time",
    unit="s",
    description="From available to leased, per order leased.",
    explicit_bucket_boundaries_advisory=WAIT_BUCKETS,
)
_meter.create_observable_gauge(
    "conveyor.queue.depth",
    callbacks=[observe("queue", "depth")],
    unit="{order}",
    description="Orders per live state (queued, leased, dead) in the database.",
)
_meter.create_observable_gauge(
    "conveyor.queue.in_flight",
    callbacks=[observe("queue", "in_flight")],
    unit="{order}",
    description="Orders leased and not yet reported.",
)
_meter.create_observable_gauge(
    "conveyor.queue.oldest_queued_age",
    callbacks=[observe("queue", "oldest_queued_age")],
    unit="s",
    description="Age of the longest-waiting available order (0: none waits).",
)

AnyOrder = WorkOrder | CompletedWorkOrder


def announce() -> None:
    """Export the rare-event counters from the start (conveyor_core.metrics.announce)."""
    metrics_announce(FAILED, DEAD_LETTERED, LEASE_EXPIRIES, REDRIVEN)


def _labels(order: AnyOrder) -> dict[str, str]:
    return {"namespace": order.namespace, "queue": order.queue}


def _count(counter, orders: Sequence[AnyOrder]) -> None:  # type: ignore[no-untyped-def]
    per_queue: dict[tuple[str, str], int] = {}
    for order in orders:
        key = (order.namespace, order.queue)
        per_queue[key] = per_queue.get(key, 0) + 1
    for (namespace, queue), n in per_queue.items():
        counter.add(n, {"namespace": namespace, "queue": queue})


def submitted(orders: Sequence[WorkOrder]) -> None:
    _count(SUBMITTED, orders)


def dispatched(orders: Sequence[WorkOrder], now: datetime) -> None:
    _count(DISPATCHED, orders)
    for order in orders:
        waited = (now - order.available_at).total_seconds()
        WAIT_TIME.record(max(0.0, waited), _labels(order))


def completed(orders: Sequence[AnyOrder]) -> None:
    _count(COMPLETED, orders)


def failed(order: WorkOrder) -> None:
    if order.state is WorkOrderState.QUEUED:
        outcome = "retried"
    elif order.state is WorkOrderState.DEAD:
        outcome = "dead"
        DEAD_LETTERED.add(1, _labels(order))
    else:
        outcome = "failed"
    FAILED.add(1, _labels(order) | {"outcome": outcome})


def expired(orders: Sequence[WorkOrder]) -> None:
    for order in orders:
        kind = order.last_timeout_kind.value.lower() if order.last_timeout_kind else "unknown"
        LEASE_EXPIRIES.add(1, _labels(order) | {"kind": kind})
        if order.state is WorkOrderState.DEAD:
            DEAD_LETTERED.add(1, _labels(order))


def redriven(namespace: str, queue: str, count: int) -> None:
    if count:
        REDRIVEN.add(count, {"namespace": namespace, "queue": queue})
