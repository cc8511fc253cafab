"""The executor's metrics beyond the pool's runs / duration / in-flight (pool.py):
failures by error type, tokens and cost by job, stalled runs, runs blocked on a person.

Labels: `kind` (http, process, workflow, task: the run kinds), `error_type` (an
ErrorType value: timeout, network, auth, ..., or "other"), `job` (the job's
resource name, namespaces/{ns}/jobs/{job}: operator-created, bounded; "" for
workflow and task runs), `direction` (input, output), `namespace` and
`workflow` (for blocked handler runs). Never a run id, a work-order id or a
correlation id. Documented in docs/observability.md.

Stalled: an attempt in progress whose last progress report (or its start, if
it never reported) is older than `CONVEYOR_EXECUTOR_STALLED_RUN_SECONDS`,
computed at scrape time from this replica's live attempts.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING

from opentelemetry.metrics import CallbackOptions, Observation

from conveyor_core.gauges import observe
from conveyor_core.metrics import announce as metrics_announce
from conveyor_core.metrics import meter
from conveyor_executor.domain.failure import ErrorType

if TYPE_CHECKING:
    from conveyor_executor.pool import WorkerPool

_meter = meter(__name__)
_ERROR_TYPES = frozenset(e.value for e in ErrorType)

FAILURES = _meter.create_counter(
    "conveyor.executor.failures",
    unit="{attempt}",
    description="Attempts that ended failed, by run kind and error type.",
)
TOKENS = _meter.create_counter(
    "conveyor.executor.tokens",
    unit="{token}",
    description="Model tokens used by attempts, by job and direction (input, output).",
)
COST = _meter.create_counter(
    "conveyor.executor.cost_usd",
    unit="{USD}",
    description="Model cost of attempts in US dollars, by job.",
)
_meter.create_observable_gauge(
    "conveyor.executor.blocked_runs",
    callbacks=[observe("executor", "blocked", empty=0.0)],
    unit="{run}",
    description="Handler runs suspended until a person resolves their mutation.",
)
_meter.create_observable_gauge(
    "conveyor.executor.blocked_oldest_age",
    callbacks=[observe("executor", "blocked_oldest_age", empty=0.0)],
    unit="s",
    description="How long the longest-blocked handler run has waited for a person.",
)

_POOLS: weakref.WeakSet[WorkerPool] = weakref.WeakSet()


def announce() -> None:
    """Export the rare-event counters from the start (conveyor_core.metrics.announce)."""
    metrics_announce(FAILURES, TOKENS, COST)


def attempt_ended(
    kind: str,
    job: str,
    error_type: str | None,
    input_tokens: int,
    output_tokens: int,
    cost_usd: float,
) -> None:
    """Count one finished attempt's failure type (if it failed) and its model usage."""
    if error_type is not None:
        error = error_type if error_type in _ERROR_TYPES else "other"
        FAILURES.add(1, {"kind": kind, "error_type": error})
    if input_tokens:
        TOKENS.add(input_tokens, {"job": job, "direction": "input"})
    if output_tokens:
        TOKENS.add(output_tokens, {"job": job, "direction": "output"})
    if cost_usd:
        COST.add(cost_usd, {"job": job})


def track_pool(pool: WorkerPool) -> None:
    """Report `pool`'s live attempts in the stalled-runs gauge while it exists."""
    _POOLS.add(pool)


def _stalled(options: CallbackOptions) -> Iterable[Observation]:
    per_kind: dict[str, int] = {}
    for pool in list(_POOLS):
        limit = pool.settings.stalled_run_seconds
        now = pool.deps.clock.now()
        for execution in list(pool.active.values()):
            ctx = execution.ctx
            last = ctx.progress.at if ctx.progress is not None else ctx.started_at
            kind = execution.decoded.origin.kind.value
            per_kind.setdefault(kind, 0)
            if (now - last).total_seconds() >= limit:
                per_kind[kind] += 1
    return [Observation(n, {"kind": kind}) for kind, n in per_kind.items()] or [Observation(0)]


_meter.create_observable_gauge(
    "conveyor.executor.runs.stalled",
    callbacks=[_stalled],
    unit="{run}",
    description="Attempts of this replica with no progress report for "
    "CONVEYOR_EXECUTOR_STALLED_RUN_SECONDS.",
)
