"""What a runner gets from the executor while it runs one attempt of a job.

Runners (HTTP plans, commands; workflow handlers later) are given a RunContext
and return a RunnerOutcome. They never touch the database: everything they
want kept goes through `record_step` and `save_output`, which the executor
persists. Persisting must never fail a run, so both swallow and log storage
errors themselves; a runner may call them freely.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from conveyor_executor.domain.failure import ClassifiedError


class StepKind(enum.StrEnum):
    HTTP_CALL = "http_call"  # one HTTP attempt of one endpoint
    ENDPOINT_SKIPPED = "endpoint_skipped"  # a dependency failed, or not in the plan
    BREAKER_TRANSITION = "breaker_transition"
    ITERATION = "iteration"  # one run of a command job's process
    CHECK = "check"  # one verification check (passed, failed or skipped)
    LOOP_DECISION = "loop_decision"  # iterate again or stop, with the reason
    INTEGRATION_CALL = "integration_call"  # e.g. the completion webhook


class StepStatus(enum.StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    ABORTED = "aborted"
    INFO = "info"  # decisions and transitions


@dataclass(frozen=True)
class Step:
    """One recorded step of a run. `attributes` is small JSON-able data.

    HTTP_CALL attributes: method, url (scrubbed), status_code, attempt,
    request_bytes, response_bytes, request_headers and response_headers
    (scrubbed), request_body and response_body (truncated, scrubbed),
    duration_ms. ITERATION: index, exit_code, stdout/stderr output refs,
    truncated flags. CHECK: level, argv, exit_code, output ref. LOOP_DECISION:
    decision ("continue" | "stop"), reason, iteration.
    """

    kind: StepKind
    name: str  # endpoint name, check name, "iteration 2", ...
    status: StepStatus
    started_at: datetime
    finished_at: datetime | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)
    error: ClassifiedError | None = None


@dataclass(frozen=True)
class RunnerOutcome:
    """How an attempt ended. `error` is set exactly when `succeeded` is False."""

    succeeded: bool
    work_found: bool
    summary: str
    error: ClassifiedError | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    #: The JSON result of a Python task (the order's result payload); None for jobs.
    result: bytes | None = None


class RunContext(Protocol):
    """The executor's side of a running attempt."""

    @property
    def run_id(self) -> str: ...
    @property
    def namespace(self) -> str: ...
    @property
    def attempt(self) -> int: ...
    @property
    def cancelled(self) -> asyncio.Event:
        """Set when the run is aborted (AbortRun, a cancel seen on heartbeat,
        or shutdown past its drain timeout): stop promptly, return ABORTED."""
        ...

    async def report_progress(self, percent: float, message: str) -> None:
        """Progress for heartbeats and WatchRun; cheap, may be called often."""
        ...

    async def record_step(self, step: Step) -> None:
        """Persist one step; never raises."""
        ...

    async def save_output(self, name: str, data: bytes, *, truncated: bool) -> str:
        """Persist an output (e.g. stdout of iteration 2); returns its reference
        ("outputs/<id>"); never raises (returns "" when it could not be kept)."""
        ...

    def secret(self, name: str) -> str | None:
        """The value of a secret reference, or None when unknown."""
        ...
