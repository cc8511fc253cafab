"""The workflow runtime's model: registered workflows, sessions, handler runs, mutations.

Pure data and the phase machine (docs/workflows.md). A handler run moves
through `Phase`s; each transition is written (with the phases it may come
from) before the next phase starts, so a run found in a phase after a crash
says exactly what may run again:

    producer: PENDING -> EXECUTING -> COMMITTED | FAILED
    consumer: PENDING -> PREPARING -> PREPARED -> MUTATING -> MUTATED -> EMITTING
              -> COMMITTED, or FAILED, or SUSPENDED (a person decides)

The mutation ledger (one mutation per consumer run): PENDING -> IN_FLIGHT ->
APPLIED | FAILED | INDETERMINATE, or NONE (mutate made no side effect).
IN_FLIGHT is written together with the MUTATING phase, before mutate is called.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from conveyor_executor.domain.failure import ClassifiedError
from conveyor_executor.domain.model import Usage


class HandlerKind(enum.StrEnum):
    PRODUCER = "producer"
    CONSUMER = "consumer"


class Phase(enum.StrEnum):
    PENDING = "PENDING"
    EXECUTING = "EXECUTING"
    PREPARING = "PREPARING"
    PREPARED = "PREPARED"
    MUTATING = "MUTATING"
    MUTATED = "MUTATED"
    EMITTING = "EMITTING"
    COMMITTED = "COMMITTED"
    FAILED = "FAILED"
    SUSPENDED = "SUSPENDED"

    @property
    def terminal(self) -> bool:
        return self in (Phase.COMMITTED, Phase.FAILED)

    @property
    def resumable(self) -> bool:
        """A session picks the run up from here (not ended, not waiting for a person)."""
        return not self.terminal and self is not Phase.SUSPENDED


RESUMABLE = tuple(p for p in Phase if p.resumable)

#: phase -> the phases a run may enter from it.
TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    Phase.PENDING: frozenset({Phase.EXECUTING, Phase.PREPARING, Phase.FAILED}),
    Phase.EXECUTING: frozenset({Phase.COMMITTED, Phase.FAILED}),
    Phase.PREPARING: frozenset({Phase.PREPARED, Phase.COMMITTED, Phase.FAILED}),
    Phase.PREPARED: frozenset({Phase.MUTATING, Phase.FAILED}),
    Phase.MUTATING: frozenset({Phase.MUTATED, Phase.PREPARED, Phase.SUSPENDED, Phase.FAILED}),
    Phase.SUSPENDED: frozenset({Phase.MUTATED, Phase.PREPARED, Phase.FAILED}),
    Phase.MUTATED: frozenset({Phase.EMITTING, Phase.FAILED}),
    Phase.EMITTING: frozenset({Phase.COMMITTED}),
    Phase.COMMITTED: frozenset(),
    Phase.FAILED: frozenset(),
}


def sources_of(target: Phase) -> tuple[Phase, ...]:
    """The phases a run may be in to move to `target` (the store's compare-and-set)."""
    return tuple(p for p, targets in TRANSITIONS.items() if target in targets)


class MutationState(enum.StrEnum):
    PENDING = "PENDING"
    IN_FLIGHT = "IN_FLIGHT"
    APPLIED = "APPLIED"
    FAILED = "FAILED"
    INDETERMINATE = "INDETERMINATE"
    NONE = "NONE"


class SessionState(enum.StrEnum):
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    COMPLETED_WITH_REMAINING_WORK = "COMPLETED_WITH_REMAINING_WORK"
    FAILED = "FAILED"
    PAUSED = "PAUSED"


class Resolution(enum.StrEnum):
    APPLIED = "applied"
    FAILED = "failed"
    SKIP = "skip"


@dataclass(frozen=True, slots=True)
class HandlerDef:
    handler: str
    kind: HandlerKind
    topic: str = ""  # consumers: the topic id
    batch: int = 0
    schedule: str = ""  # the scheduler's schedule resource name
    has_reconcile: bool = False


@dataclass(frozen=True, slots=True)
class WorkflowRecord:
    namespace: str
    workflow: str
    handlers: tuple[HandlerDef, ...]
    code_version: str
    queue: str
    iteration_budget: int
    cost_budget_usd: float
    registered_at: datetime
    updated_at: datetime
    paused: bool = False
    paused_by: str = ""
    pause_reason: str = ""

    @property
    def name(self) -> str:
        return f"namespaces/{self.namespace}/workflows/{self.workflow}"


@dataclass(frozen=True, slots=True)
class Session:
    namespace: str
    session_id: str
    workflow: str
    state: SessionState
    trigger: str
    code_version: str
    started_at: datetime
    iterations: int = 0
    handler_runs: int = 0
    usage: Usage = field(default_factory=Usage)
    follow_up: str = ""
    summary: str = ""
    ended_at: datetime | None = None

    @property
    def name(self) -> str:
        return f"namespaces/{self.namespace}/sessions/{self.session_id}"


@dataclass(frozen=True, slots=True)
class HeldEvent:
    """An event a consumer run reserved, as saved with its PREPARED checkpoint."""

    topic: str
    sequence: int
    message_id: str
    title: str
    payload: Any  # decoded JSON (or the text of a non-JSON payload)


@dataclass(frozen=True, slots=True)
class Emit:
    """What a producer or `next` returned, saved before the commit (EMITTING)."""

    keep_state: bool
    state: Any
    events: tuple[dict[str, Any], ...]  # {"topic", "message_id", "title", "payload"}


@dataclass(frozen=True, slots=True)
class HandlerRun:
    namespace: str
    handler_run_id: str
    session_id: str
    workflow: str
    handler: str
    kind: HandlerKind
    phase: Phase
    queue: str
    code_version: str
    created_at: datetime
    updated_at: datetime
    topic: str = ""
    events: tuple[HeldEvent, ...] = ()
    prepared: Any = None
    mutation_result: dict[str, Any] | None = None  # {"kind": ..., "value": ...}
    emit: Emit | None = None
    state_version: int = 0
    error: ClassifiedError | None = None
    prompt: str = ""
    usage: Usage = field(default_factory=Usage)
    events_published: int = 0
    ended_at: datetime | None = None
    revision: int = 0  # bumped by every change (the store's compare-and-set)

    @property
    def name(self) -> str:
        return f"namespaces/{self.namespace}/handlerRuns/{self.handler_run_id}"


@dataclass(frozen=True, slots=True)
class Mutation:
    namespace: str
    handler_run_id: str
    workflow: str
    handler: str
    state: MutationState
    attempts: int
    started_at: datetime
    updated_at: datetime
    result: Any = None
    error: ClassifiedError | None = None
    reconciled: str = ""
    resolution: Resolution | None = None
    resolved_by: str = ""
    resolution_reason: str = ""
    resolved_at: datetime | None = None
    ended_at: datetime | None = None

    @property
    def name(self) -> str:
        return f"namespaces/{self.namespace}/handlerRuns/{self.handler_run_id}/mutation"


def prompt_for(run: HandlerRun, mutation: Mutation, call: str) -> str:
    """The words a person reads on a suspended run: what was attempted, and the choices."""
    titles = "; ".join(e.title for e in run.events[:10]) or "(no events)"
    if len(run.events) > 10:
        titles += f"; and {len(run.events) - 10} more"
    error = mutation.error.message if mutation.error else "no answer"
    return (
        f"Consumer {run.handler} of workflow {run.workflow} called {call} for: {titles}. "
        f"The call's outcome is unknown ({error}); "
        f"reconcile {'answered unknown' if mutation.reconciled else 'is not defined'}. "
        "Check the other side, then resolve: APPLIED if it happened (give its result; "
        "next runs with it), FAILED if it did not (mutate runs again), or SKIP to leave "
        "it (next runs with skipped)."
    )
