"""The storage contract of runs, attempts, steps, outputs and journal records.

Entity+Verb methods over frozen params; implementations return domain types
and raise domain errors (`RunNotFound`, `OutputNotFound`), never driver errors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from conveyor_executor.domain.failure import ClassifiedError
from conveyor_executor.domain.model import (
    AttemptEnd,
    JobUsage,
    Output,
    OutputRef,
    Progress,
    Run,
    RunOrigin,
    RunRef,
    RunState,
    StepRecord,
)
from conveyor_executor.runners.context import Step


@dataclass(frozen=True, slots=True)
class JournalDraft:
    """A journal record written in the same transaction as the change it reports."""

    type: str
    namespace: str
    at: datetime
    subjects: Mapping[str, str]
    correlation_id: str = ""
    trace_id: str = ""
    attributes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AttemptStart:
    ref: RunRef
    origin: RunOrigin
    attempt: int
    executor: str
    now: datetime
    journal: tuple[JournalDraft, ...] = ()


@dataclass(frozen=True, slots=True)
class AttemptFinish:
    ref: RunRef
    attempt: int
    end: AttemptEnd
    journal: tuple[JournalDraft, ...] = ()


@dataclass(frozen=True, slots=True)
class StepDraft:
    ref: RunRef
    attempt: int
    step: Step
    max_error_message: int


@dataclass(frozen=True, slots=True)
class RunListCursor:
    created_at_us: int
    run_id: str


@dataclass(frozen=True, slots=True)
class RunListParams:
    namespace: str
    job: str = ""
    states: tuple[RunState, ...] = ()
    work_order: str = ""
    schedule: str = ""
    after: RunListCursor | None = None
    limit: int = 50


class BatchPartlyWritten(Exception):
    """A batch write failed after committing some of its items: `written` (their indexes
    in the batch) are durable and must not be written again; the others are not."""

    def __init__(self, written: frozenset[int], cause: BaseException) -> None:
        super().__init__(f"{len(written)} items written before: {cause!r}")
        self.written = written


class RunStore(Protocol):
    async def run_start_attempt(self, params: AttemptStart) -> Run:
        """Create the run if new, record the attempt, and set the run RUNNING."""
        ...

    async def run_finish_attempt(self, params: AttemptFinish) -> Run: ...
    async def run_start_attempts(self, batch: Sequence[AttemptStart]) -> None:
        """`run_start_attempt` of each, each attempt's records committed together (one
        transaction or statement per batch, or two); nothing is read back.

        Raises:
            BatchPartlyWritten: some attempts were recorded before the failure.
        """
        ...

    async def run_finish_attempts(self, batch: Sequence[AttemptFinish]) -> None:
        """`run_finish_attempt` of each, in one transaction or statement; nothing is read
        back."""
        ...

    async def run_abort_pending(
        self, ref: RunRef, error: ClassifiedError, at: datetime, journal: tuple[JournalDraft, ...]
    ) -> Run:
        """End a PENDING run (its order was cancelled while waiting for a retry) ABORTED."""
        ...

    async def run_set_progress(self, ref: RunRef, progress: Progress) -> None: ...
    async def run_get(self, ref: RunRef) -> Run: ...
    async def run_list(self, params: RunListParams) -> list[Run]: ...
    async def step_insert(
        self, ref: RunRef, attempt: int, step: Step, max_error_message: int
    ) -> StepRecord: ...
    async def step_insert_many(self, drafts: Sequence[StepDraft]) -> list[StepRecord]:
        """Steps of any runs in one transaction, with their seq, in order."""
        ...

    async def step_list(self, ref: RunRef, after_seq: int, limit: int) -> list[StepRecord]: ...
    async def output_insert(
        self, ref: RunRef, name: str, data: bytes, truncated: bool, now: datetime
    ) -> OutputRef: ...
    async def output_get(self, ref: OutputRef) -> Output: ...
    async def output_list(
        self, ref: RunRef, after: tuple[int, str] | None, limit: int
    ) -> list[Output]:
        """A run's outputs oldest first (created, id), after the cursor, without data;
        RunNotFound when the run does not exist."""
        ...

    async def job_usage(self, namespace: str, job: str) -> JobUsage: ...
    async def journal_append(self, drafts: Sequence[JournalDraft]) -> None:
        """Journal records that go with no other write (e.g. an integration call failed)."""
        ...
