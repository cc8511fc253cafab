"""What the phase driver stands on: the session's scope, journal drafts, handler contexts,
usage sums and the fault hook of the crash tests (conveyor_executor.workflow.handlers)."""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from typing import Any

from conveyor_core.clock import Clock
from conveyor_executor.context import AttemptContext
from conveyor_executor.domain.model import Usage
from conveyor_executor.domain.workflow import HandlerRun, HeldEvent, Phase
from conveyor_executor.settings import ExecutorSettings
from conveyor_executor.store.base import JournalDraft
from conveyor_executor.store.workflow_base import WorkflowStore
from conveyor_executor.workflow.peers import EventsPort
from conveyor_sdk import HandlerContext, ReservedEvent

log = logging.getLogger(__name__)


@dataclass
class SessionScope:
    """What every handler run of one session shares."""

    namespace: str
    session_id: str
    workflow: str
    queue: str
    code_version: str
    correlation_id: str
    trace_id: str
    attempt: AttemptContext
    usage: Usage = field(default_factory=Usage)


class DriverBase:
    def __init__(
        self,
        store: WorkflowStore,
        events: EventsPort,
        settings: ExecutorSettings,
        clock: Clock,
        poke_outbox: Any,
    ) -> None:
        self.store = store
        self.events = events
        self.settings = settings
        self.clock = clock
        self._poke = poke_outbox
        self._fresh: set[str] = set()  # runs created PREPARING in this process, not prepared
        self._unmutated: set[str] = set()  # ... and with no mutation row yet

    # -- records ------------------------------------------------------------------------
    def _journal(
        self, scope: SessionScope, run: HandlerRun, type_: str, **attrs: str
    ) -> JournalDraft:
        return JournalDraft(
            type=type_,
            namespace=run.namespace,
            at=self.clock.now(),
            subjects={
                "workflow": run.workflow,
                "handler": run.handler,
                "handler_run": run.handler_run_id,
                "session": scope.session_id,
            },
            correlation_id=scope.correlation_id,
            trace_id=scope.trace_id,
            attributes={k: v[:256] for k, v in attrs.items()},
        )

    def _context(
        self, scope: SessionScope, run: HandlerRun, events: tuple[HeldEvent, ...] = ()
    ) -> HandlerContext:
        return HandlerContext(
            workflow=run.workflow,
            handler=run.handler,
            handler_run_id=run.handler_run_id,
            session_id=scope.session_id,
            events=[
                ReservedEvent(e.topic, e.sequence, e.message_id, e.title, e.payload) for e in events
            ],
            code_version=scope.code_version,
            namespace=run.namespace,
            work_order_id=scope.session_id,
            attempt=scope.attempt.attempt,
            correlation_id=scope.correlation_id,
            deadline=None,
            report_progress=scope.attempt.set_progress,
            loop=asyncio.get_running_loop(),
        )

    def _usage(self, scope: SessionScope, run: HandlerRun, ctx: HandlerContext) -> Usage:
        used = ctx.usage
        scope.usage = Usage(
            scope.usage.input_tokens + used.input_tokens,
            scope.usage.output_tokens + used.output_tokens,
            scope.usage.cost_usd + used.cost_usd,
        )
        return Usage(
            run.usage.input_tokens + used.input_tokens,
            run.usage.output_tokens + used.output_tokens,
            run.usage.cost_usd + used.cost_usd,
        )

    def _fault_exit(self, run: HandlerRun, *phases: Phase) -> None:
        only = self.settings.fault_exit_handler
        if only and run.handler != only:
            return
        if self.settings.fault_exit_after_phase in {p.value for p in phases}:
            log.warning(
                "fault_exit_after_phase=%s: exiting as kill -9 would (a run of %s)",
                phases[0].value,
                run.handler,
            )
            os._exit(137)
