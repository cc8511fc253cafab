"""The storage contract of the workflow runtime: workflows, sessions, handler runs, ledger.

Every phase change is a compare-and-set (`expect`: the phases the run may be in),
written with its journal records in one transaction; a mutation change goes in
the same transaction as the phase change it belongs to.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from conveyor_executor.domain.model import Usage
from conveyor_executor.domain.workflow import (
    HandlerRun,
    Mutation,
    MutationState,
    Phase,
    Session,
    WorkflowRecord,
)
from conveyor_executor.store.base import JournalDraft


@dataclass(frozen=True, slots=True)
class Advance:
    """Move a handler run to `phase` from one of `expect`, changing `changes` with it."""

    namespace: str
    handler_run_id: str
    expect: tuple[Phase, ...]
    phase: Phase
    now: datetime
    changes: Mapping[str, Any] = field(default_factory=dict)  # HandlerRun field -> value
    mutation: Mutation | None = None  # upserted in the same transaction
    journal: tuple[JournalDraft, ...] = ()
    revision: int | None = None  # the run's revision read; None: any
    # The run as the caller read it, at `revision`: the store returns it with the changes
    # applied (what a read would give) instead of reading the moved row back.
    base: HandlerRun | None = None


@dataclass(frozen=True, slots=True)
class HandlerRunListParams:
    namespace: str
    workflow: str = ""
    phases: tuple[Phase, ...] = ()
    session_id: str = ""
    after: tuple[int, str] | None = None  # (created_at micros, id), newest first
    limit: int = 50


@dataclass(frozen=True, slots=True)
class MutationListParams:
    namespace: str
    workflow: str = ""
    states: tuple[MutationState, ...] = ()
    after: tuple[int, str] | None = None
    limit: int = 50


class WorkflowStore(Protocol):
    async def workflow_register(self, record: WorkflowRecord) -> WorkflowRecord:
        """Insert or update the definition; a paused workflow stays paused."""
        ...

    async def workflow_get(self, namespace: str, workflow: str) -> WorkflowRecord: ...
    async def workflow_list(self, namespace: str) -> list[WorkflowRecord]: ...
    async def workflow_set_paused(
        self,
        namespace: str,
        workflow: str,
        paused: bool,
        by: str,
        reason: str,
        now: datetime,
        journal: tuple[JournalDraft, ...],
    ) -> WorkflowRecord: ...

    async def session_start(self, session: Session, journal: tuple[JournalDraft, ...]) -> Session:
        """Create the session, or return the existing one (a re-leased order) RUNNING again."""
        ...

    async def session_finish(self, session: Session, journal: tuple[JournalDraft, ...]) -> Session:
        """Store the session's end; raises SessionNotFound when it was never started."""
        ...

    async def session_get(self, namespace: str, session_id: str) -> Session: ...
    async def workflow_usage(self, namespace: str, workflow: str) -> Usage:
        """Usage summed over the workflow's sessions."""
        ...

    async def session_list(
        self, namespace: str, workflow: str, after: tuple[int, str] | None, limit: int
    ) -> list[Session]: ...

    async def handler_run_create(
        self, run: HandlerRun, journal: tuple[JournalDraft, ...]
    ) -> HandlerRun:
        """Insert the run; for a run id already stored, return that run (no journal)."""
        ...

    async def handler_run_advance(self, params: Advance) -> HandlerRun:
        """Raises PhaseConflict when the run is not in one of `params.expect` (or not at
        `params.revision`), HandlerRunNotFound when there is no such run."""
        ...

    async def handler_run_get(self, namespace: str, handler_run_id: str) -> HandlerRun: ...
    async def handler_run_list(self, params: HandlerRunListParams) -> list[HandlerRun]: ...
    async def mutation_get(self, namespace: str, handler_run_id: str) -> Mutation | None: ...
    async def mutation_list(self, params: MutationListParams) -> list[Mutation]: ...
