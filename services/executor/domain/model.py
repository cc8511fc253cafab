"""The run model: a run per work order, attempts per lease, steps and outputs.

A run's id is its work order's id, so every attempt of an order (another
lease after a retryable failure, on this executor or another) lands in the
same run. Workflow runs will add states (preparing, prepared, mutating, ...)
to `RunState`; `RunKind` says which target a run executes.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from conveyor_executor.domain.failure import ClassifiedError


class RunState(enum.StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    ABORTED = "ABORTED"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({RunState.SUCCEEDED, RunState.FAILED, RunState.ABORTED})


class RunKind(enum.StrEnum):
    HTTP = "http"
    COMMAND = "command"
    WORKFLOW = "workflow"
    TASK = "task"  # a Python task of a hosted app (conveyor.App)
    UNKNOWN = "unknown"  # the payload could not be read


@dataclass(frozen=True, slots=True)
class RunRef:
    namespace: str
    run_id: str

    @property
    def name(self) -> str:
        return f"namespaces/{self.namespace}/runs/{self.run_id}"


@dataclass(frozen=True, slots=True)
class OutputRef:
    run: RunRef
    output_id: str

    @property
    def name(self) -> str:
        return f"{self.run.name}/outputs/{self.output_id}"


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0


@dataclass(frozen=True, slots=True)
class Progress:
    percent: float
    message: str
    at: datetime


@dataclass(frozen=True, slots=True)
class RunOrigin:
    """Where a run comes from: its work order and, when readable, its job invocation."""

    work_order: str
    kind: RunKind
    job: str = ""
    job_version: int = 0
    schedule: str = ""
    slot_time: datetime | None = None
    fire_id: str = ""
    correlation_id: str = ""
    trace_id: str = ""


@dataclass(frozen=True, slots=True)
class Attempt:
    number: int
    executor: str
    state: RunState
    started_at: datetime
    ended_at: datetime | None = None
    error: ClassifiedError | None = None
    summary: str = ""


@dataclass(frozen=True, slots=True)
class Run:
    ref: RunRef
    origin: RunOrigin
    state: RunState
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    ended_at: datetime | None = None
    attempts: tuple[Attempt, ...] = ()
    error: ClassifiedError | None = None
    work_found: bool = False
    summary: str = ""
    usage: Usage = field(default_factory=Usage)
    progress: Progress | None = None


@dataclass(frozen=True, slots=True)
class StepRecord:
    """A persisted step (conveyor_executor.runners.context.Step) with its position."""

    run: RunRef
    seq: int
    attempt: int
    kind: str
    name: str
    status: str
    started_at: datetime
    finished_at: datetime | None
    attributes: Mapping[str, Any]
    error: ClassifiedError | None


@dataclass(frozen=True, slots=True)
class Output:
    ref: OutputRef
    name: str
    data: bytes
    truncated: bool
    size: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class AttemptEnd:
    """How an attempt ended, as the store records it on the run and the attempt."""

    attempt_state: RunState  # SUCCEEDED, FAILED or ABORTED
    run_state: RunState  # the same, or PENDING when the queue will lease the order again
    at: datetime
    error: ClassifiedError | None = None
    work_found: bool = False
    summary: str = ""
    usage: Usage = field(default_factory=Usage)


@dataclass(frozen=True, slots=True)
class JobUsage:
    job: str
    run_count: int
    usage: Usage
