"""WorkflowService's use cases: reading the runtime's records, pausing, resolving mutations."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from conveyor_core.clock import Clock
from conveyor_core.errors import FailedPrecondition, PreconditionViolation
from conveyor_executor.domain.model import Usage
from conveyor_executor.domain.workflow import (
    HandlerRun,
    Mutation,
    MutationState,
    Phase,
    Resolution,
    Session,
    WorkflowRecord,
)
from conveyor_executor.store.base import JournalDraft
from conveyor_executor.store.workflow_base import (
    Advance,
    HandlerRunListParams,
    MutationListParams,
    WorkflowStore,
)
from conveyor_executor.workflow.peers import SessionSubmitter

log = logging.getLogger(__name__)


class NotResolvable(FailedPrecondition):
    reason = "MUTATION_NOT_RESOLVABLE"

    def __init__(self, name: str, why: str) -> None:
        super().__init__(PreconditionViolation("STATE", name, why))


class WorkflowEngine:
    def __init__(self, store: WorkflowStore, clock: Clock, poke_outbox: Any) -> None:
        self.store = store
        self.clock = clock
        self._poke = poke_outbox
        self.submitter: SessionSubmitter | None = None  # set once the queue is known

    def _journal(
        self, namespace: str, type_: str, subjects: dict[str, str], **attrs: str
    ) -> JournalDraft:
        return JournalDraft(
            type=type_,
            namespace=namespace,
            at=self.clock.now(),
            subjects=subjects,
            attributes={k: v[:256] for k, v in attrs.items()},
        )

    async def workflow_list(self, namespace: str) -> list[WorkflowRecord]:
        return await self.store.workflow_list(namespace)

    async def workflow_get(self, namespace: str, workflow: str) -> tuple[WorkflowRecord, Usage]:
        record = await self.store.workflow_get(namespace, workflow)
        return record, await self.store.workflow_usage(namespace, workflow)

    async def set_paused(
        self, namespace: str, workflow: str, paused: bool, by: str, reason: str
    ) -> WorkflowRecord:
        verb = "paused" if paused else "resumed"
        journal = (
            self._journal(
                namespace, f"workflow.{verb}", {"workflow": workflow}, by=by, reason=reason
            ),
        )
        record = await self.store.workflow_set_paused(
            namespace, workflow, paused, by, reason, self.clock.now(), journal
        )
        self._poke()
        if not paused:
            await self._start_session(
                record.namespace,
                record.queue,
                workflow,
                f"resume/{workflow}/{self.clock.now().timestamp():.6f}",
                "resumed",
            )
        return record

    async def session_get(self, namespace: str, session_id: str) -> Session:
        return await self.store.session_get(namespace, session_id)

    async def session_list(
        self, namespace: str, workflow: str, after: tuple[int, str] | None, limit: int
    ) -> list[Session]:
        return await self.store.session_list(namespace, workflow, after, limit)

    async def handler_run_get(
        self, namespace: str, run_id: str
    ) -> tuple[HandlerRun, Mutation | None]:
        run = await self.store.handler_run_get(namespace, run_id)
        return run, await self.store.mutation_get(namespace, run_id)

    async def handler_run_list(self, params: HandlerRunListParams) -> list[HandlerRun]:
        return await self.store.handler_run_list(params)

    async def mutation_list(self, params: MutationListParams) -> list[Mutation]:
        return await self.store.mutation_list(params)

    async def resolve(
        self,
        namespace: str,
        run_id: str,
        resolution: Resolution,
        result: Any,
        by: str,
        reason: str,
    ) -> tuple[HandlerRun, Mutation]:
        """A person's decision on a suspended run's indeterminate mutation; resumes the run."""
        run, mutation = await self.handler_run_get(namespace, run_id)
        if run.phase is not Phase.SUSPENDED or mutation is None:
            raise NotResolvable(run.name, f"the run is {run.phase.value}, not SUSPENDED")
        if mutation.state is not MutationState.INDETERMINATE:
            raise NotResolvable(run.name, f"its mutation is {mutation.state.value}")
        now = self.clock.now()
        decided = replace(
            mutation,
            resolution=resolution,
            resolved_by=by,
            resolution_reason=reason,
            resolved_at=now,
            updated_at=now,
        )
        if resolution is Resolution.APPLIED:
            decided = replace(decided, state=MutationState.APPLIED, result=result, ended_at=now)
            phase, changes = (
                Phase.MUTATED,
                {"mutation_result": {"kind": "applied", "value": result}},
            )
        elif resolution is Resolution.SKIP:
            phase, changes = Phase.MUTATED, {"mutation_result": {"kind": "skipped", "value": None}}
        else:
            decided = replace(decided, state=MutationState.FAILED, ended_at=now)
            phase, changes = Phase.PREPARED, {}
        subjects = {
            "workflow": run.workflow,
            "handler": run.handler,
            "handler_run": run.handler_run_id,
        }
        journal = (
            self._journal(
                namespace,
                "workflow.mutation.resolved",
                subjects,
                resolution=resolution.value,
                by=by,
                reason=reason,
            ),
        )
        advanced = await self.store.handler_run_advance(
            Advance(
                namespace,
                run_id,
                (Phase.SUSPENDED,),
                phase,
                now,
                {**changes, "prompt": ""},
                decided,
                journal,
                revision=run.revision,
                base=run,
            )
        )
        self._poke()
        log.info("handler run %s resolved %s by %s: %s", run.name, resolution.value, by, reason)
        await self._start_session(
            namespace, run.queue, run.workflow, f"resolved/{run_id}/{mutation.attempts}", "resolved"
        )
        return advanced, decided

    async def _start_session(
        self, namespace: str, queue: str, workflow: str, key: str, why: str
    ) -> None:
        if self.submitter is None:
            log.warning(
                "workflow %s: no queue known; the next session starts on its trigger", workflow
            )
            return
        try:
            await self.submitter.submit(namespace, queue, workflow, key, why)
        except Exception:
            log.warning(
                "workflow %s: could not start a session (%s); the next trigger will",
                workflow,
                why,
                exc_info=True,
            )
