"""A workflow session: one work order on the workflow's queue, one at a time per workflow.

The queue keeps sessions of one workflow from overlapping: their orders carry the
concurrency key `workflow/<id>` and the workflow's queue allows one leased order
per key. A session (docs/workflows.md):

1. resumes the workflow's handler runs left mid-phase (a killed executor's, or a
   run a person just resolved), from their last checkpoint;
2. runs the producer whose schedule fired it (once per session, even when the
   session's order is leased again);
3. loops the consumers whose topics have pending events, until none has any or
   the iteration or cost budget is spent. A budget stop with work left ends
   COMPLETED_WITH_REMAINING_WORK and submits the follow-up session; a session
   never ends COMPLETED with pending events it could have taken.

A failed handler run fails the session; its order then follows its retry policy.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import grpc

from conveyor.common.v1 import job_pb2
from conveyor_core.clock import Clock
from conveyor_core.errors import NotFound
from conveyor_executor.context import AttemptContext
from conveyor_executor.domain.failure import ClassifiedError, ErrorType
from conveyor_executor.domain.workflow import (
    RESUMABLE,
    HandlerKind,
    HandlerRun,
    Phase,
    Session,
    SessionState,
)
from conveyor_executor.errors import PhaseConflict
from conveyor_executor.runners.context import RunnerOutcome
from conveyor_executor.settings import ExecutorSettings
from conveyor_executor.store.base import JournalDraft
from conveyor_executor.store.workflow_base import HandlerRunListParams, WorkflowStore
from conveyor_executor.workflow.calls import HandlerError
from conveyor_executor.workflow.driver_base import SessionScope
from conveyor_executor.workflow.handlers import PhaseDriver
from conveyor_executor.workflow.peers import EventsPort, SessionSubmitter
from conveyor_sdk import App, Consumer, Producer, Workflow

log = logging.getLogger(__name__)


def _failed(error: ClassifiedError) -> RunnerOutcome:
    return RunnerOutcome(False, False, error.message, error)


def _invalid(message: str) -> RunnerOutcome:
    return _failed(ClassifiedError.of(ErrorType.INVALID_INPUT, message[:1000]))


class SessionRunner:
    """Runs sessions of the workflows of the apps one executor hosts."""

    def __init__(
        self,
        apps: Sequence[App],
        store: WorkflowStore,
        settings: ExecutorSettings,
        clock: Clock,
        poke_outbox: Any,
    ) -> None:
        self.workflows: dict[tuple[str, str], Workflow] = {
            (app.namespace, name): wf for app in apps for name, wf in app.workflows.items()
        }
        self.versions = {(app.namespace, n): app.version for app in apps for n in app.workflows}
        self.store = store
        self.settings = settings
        self.clock = clock
        self._poke = poke_outbox
        self._driver: PhaseDriver | None = None
        self._submitter: SessionSubmitter | None = None

    def attach(self, events: EventsPort, submitter: SessionSubmitter) -> None:
        """Sessions run once the event store and the queue are known (attach_peers)."""
        self._driver = PhaseDriver(self.store, events, self.settings, self.clock, self._poke)
        self._submitter = submitter

    @property
    def driver(self) -> PhaseDriver:
        assert self._driver is not None
        return self._driver

    @property
    def submitter(self) -> SessionSubmitter:
        assert self._submitter is not None
        return self._submitter

    def preflight(self, namespace: str, target: job_pb2.WorkflowTarget) -> Workflow | RunnerOutcome:
        """The workflow to run, or the error that stops the order before any phase."""
        workflow = self.workflows.get((namespace, target.workflow))
        if workflow is None:
            defined = sorted(w for ns, w in self.workflows if ns == namespace)
            where = (
                f"namespace {namespace} defines: {', '.join(defined)}"
                if defined
                else (f"no app hosted here has namespace {namespace}")
            )
            return _invalid(f"workflow not found: {target.workflow[:128]} ({where})")
        if target.handler and target.handler not in workflow.handlers:
            names = ", ".join(sorted(workflow.handlers))
            return _invalid(
                f"handler not found: {target.handler[:128]} "
                f"(workflow {workflow.name} defines: {names})"
            )
        return workflow

    def _journal(
        self, session: Session, type_: str, scope: SessionScope, **attrs: str
    ) -> JournalDraft:
        return JournalDraft(
            type=type_,
            namespace=session.namespace,
            at=self.clock.now(),
            subjects={"workflow": session.workflow, "session": session.session_id},
            correlation_id=scope.correlation_id,
            trace_id=scope.trace_id,
            attributes={k: v[:256] for k, v in attrs.items()},
        )

    async def run(
        self,
        target: job_pb2.WorkflowTarget,
        ctx: AttemptContext,
        correlation_id: str,
        trace_id: str,
    ) -> RunnerOutcome:
        found = self.preflight(ctx.namespace, target)
        if isinstance(found, RunnerOutcome):
            return found
        workflow = found
        if self._driver is None:
            return _failed(
                ClassifiedError(
                    ErrorType.INTERNAL,
                    "this executor does not know the event store's address "
                    "(CONVEYOR_EVENTS_ADDRESS): it cannot run workflow sessions",
                    True,
                    {},
                )
            )
        version = self.versions.get((ctx.namespace, workflow.name), "")
        scope = SessionScope(
            ctx.namespace,
            ctx.run_id,
            workflow.name,
            workflow.queue,
            version,
            correlation_id,
            trace_id,
            ctx,
        )
        session = Session(
            ctx.namespace,
            ctx.run_id,
            workflow.name,
            SessionState.RUNNING,
            target.handler,
            version,
            self.clock.now(),
        )
        try:
            record = await self.store.workflow_get(ctx.namespace, workflow.name)
            paused = record.paused
        except NotFound:
            paused = False
        if paused:
            session = await self.store.session_start(session, ())
            ended = replace(
                session,
                state=SessionState.PAUSED,
                summary="the workflow is paused: nothing ran",
                ended_at=self.clock.now(),
            )
            await self.store.session_finish(
                ended, (self._journal(ended, "workflow.session.paused", scope),)
            )
            self._poke()
            return RunnerOutcome(True, False, ended.summary)
        session = await self.store.session_start(
            session,
            (self._journal(session, "workflow.session.started", scope, trigger=target.handler),),
        )
        self._poke()
        try:
            session = await self._loop(workflow, target.handler, session, scope)
        except asyncio.CancelledError:
            # Stopped past the grace period (lease lost, aborted, shutting down) inside a
            # handler call: the session ends here, recorded before the cancellation goes
            # on, or it would read RUNNING until another attempt of its order starts it.
            reason = ctx.stop_reason or "the session's task was cancelled"
            error = ClassifiedError(ErrorType.INTERNAL, f"session stopped: {reason}", True, {})
            await asyncio.shield(self._end_failed(session, scope, error))
            raise
        except HandlerError as failure:
            return await self._end_failed(session, scope, failure.error)
        except PhaseConflict as conflict:  # another executor drives the run: never both
            error = ClassifiedError(
                ErrorType.INTERNAL, f"session stopped: {conflict}"[:1000], True, {}
            )
            return await self._end_failed(session, scope, error)
        except grpc.aio.AioRpcError as error:
            unreachable = ClassifiedError(
                ErrorType.NETWORK,
                f"a call to the event store or the queue failed: {error.code().name}: "
                f"{error.details()}"[:1000],
                True,
                {},
            )
            return await self._end_failed(session, scope, unreachable)
        await self.store.session_finish(
            session,
            (
                self._journal(
                    session,
                    f"workflow.session.{session.state.value.lower()}",
                    scope,
                    iterations=str(session.iterations),
                    summary=session.summary,
                ),
            ),
        )
        self._poke()
        usage = session.usage
        return RunnerOutcome(
            True,
            session.iterations > 0 or session.handler_runs > 0,
            session.summary,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cost_usd=usage.cost_usd,
        )

    async def _end_failed(
        self, session: Session, scope: SessionScope, error: ClassifiedError
    ) -> RunnerOutcome:
        ended = replace(
            session,
            state=SessionState.FAILED,
            summary=error.message[:1000],
            ended_at=self.clock.now(),
            usage=scope.usage,
        )
        try:
            await self.store.session_finish(
                ended,
                (self._journal(ended, "workflow.session.failed", scope, error=error.message),),
            )
            self._poke()
        except Exception:
            log.warning("session %s: end not recorded", ended.name, exc_info=True)
        return _failed(error)

    async def _drive(self, workflow: Workflow, run: HandlerRun, scope: SessionScope) -> HandlerRun:
        handler = workflow.handlers.get(run.handler)
        if handler is None:
            error = ClassifiedError.of(
                ErrorType.INVALID_INPUT,
                f"handler not found: {run.handler} (workflow {workflow.name} defines: "
                f"{', '.join(sorted(workflow.handlers))}); this code version cannot resume it",
            )
            raise HandlerError(error)
        if isinstance(handler, Producer):
            done = await self.driver.producer(scope, handler, run)
        else:
            done = await self.driver.consumer(scope, handler, run)
        if done.phase is Phase.FAILED and done.error is not None:
            raise HandlerError(done.error)
        return done

    async def _loop(
        self, workflow: Workflow, trigger: str, session: Session, scope: SessionScope
    ) -> Session:
        ns = session.namespace
        runs = suspended = 0
        # 1. Runs left mid-phase, oldest first.
        left = await self.store.handler_run_list(
            HandlerRunListParams(ns, workflow.name, RESUMABLE, limit=1000)
        )
        for run in reversed(left):
            done = await self._drive(workflow, run, scope)
            runs += 1
            suspended += done.phase is Phase.SUSPENDED
        # 2. The producer this session was fired for, once per session.
        producer = workflow.producers.get(trigger)
        if producer is not None and not await self._produced(session, producer):
            run = await self.driver.create(scope, HandlerKind.PRODUCER, producer.name)
            await self._drive(workflow, run, scope)
            runs += 1
        # 3. Consumers while events wait and the budget lasts.
        iterations = session.iterations
        budget_hit = False
        known: dict[str, int] = {}  # consumer -> pending events counted, less those taken
        while True:
            progressed = False
            for consumer in workflow.consumers.values():
                if self._over_budget(workflow, iterations, scope):
                    budget_hit = True
                    break
                if scope.attempt.stop_cause is not None:
                    raise HandlerError(
                        ClassifiedError(
                            ErrorType.INTERNAL,
                            f"session stopped: {scope.attempt.stop_reason}",
                            True,
                            {},
                        )
                    )
                # Pending only grows but by our own runs: while the count read last is
                # not used up, there is work without asking the event store again.
                if known.get(consumer.name, 0) <= 0:
                    known[consumer.name] = await self.driver.events.pending(ns, consumer.topic)
                    if not known[consumer.name]:
                        continue
                run = await self.driver.create(
                    scope, HandlerKind.CONSUMER, consumer.name, consumer.topic, preparing=True
                )
                done = await self._drive(workflow, run, scope)
                # Nothing reserved although counted: ask again next time.
                known[consumer.name] = (
                    (known[consumer.name] - len(done.events)) if done.events else 0
                )
                iterations += 1
                runs += 1
                suspended += done.phase is Phase.SUSPENDED
                progressed = True
            if budget_hit or not progressed:
                break
        remaining = await self._remaining(workflow)
        state, follow_up = SessionState.COMPLETED, ""
        if remaining and budget_hit:
            state = SessionState.COMPLETED_WITH_REMAINING_WORK
            follow_up = await self.submitter.submit(
                ns,
                workflow.queue,
                workflow.name,
                f"session/{session.session_id}/follow-up",
                "follow-up",
            )
        summary = f"{runs} handler runs, {iterations} consumer iterations"
        if suspended:
            summary += f", {suspended} suspended waiting for a person"
        if follow_up:
            summary += f"; {remaining} events left for session {follow_up}"
        return replace(
            session,
            state=state,
            iterations=iterations,
            handler_runs=session.handler_runs + runs,
            usage=scope.usage,
            follow_up=follow_up,
            summary=summary,
            ended_at=self.clock.now(),
        )

    def _over_budget(self, workflow: Workflow, iterations: int, scope: SessionScope) -> bool:
        if iterations >= workflow.iteration_budget:
            return True
        budget = workflow.cost_budget_usd
        return budget is not None and scope.usage.cost_usd >= budget

    async def _produced(self, session: Session, producer: Producer) -> bool:
        runs = await self.store.handler_run_list(
            HandlerRunListParams(
                session.namespace,
                session.workflow,
                (Phase.COMMITTED, Phase.FAILED),
                session_id=session.session_id,
                limit=1000,
            )
        )
        return any(r.handler == producer.name for r in runs)

    async def _remaining(self, workflow: Workflow) -> int:
        consumers: Sequence[Consumer] = list(workflow.consumers.values())
        total = 0
        for topic in dict.fromkeys(c.topic for c in consumers):
            total += await self.driver.events.pending(workflow.app.namespace, topic)
        return total
