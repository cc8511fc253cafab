"""The executor engine: reads of runs, AbortRun and WatchRun over the store and the pool."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import grpc

from conveyor.queue.v1 import messages_pb2 as queue_pb
from conveyor_core.clock import Clock
from conveyor_core.errors import Unavailable
from conveyor_executor.context import StopCause
from conveyor_executor.domain.failure import ClassifiedError, ErrorType
from conveyor_executor.domain.model import (
    TERMINAL,
    JobUsage,
    Output,
    OutputRef,
    Run,
    RunRef,
    RunState,
    StepRecord,
)
from conveyor_executor.errors import RunNotAbortable
from conveyor_executor.pool import WorkerPool
from conveyor_executor.settings import ExecutorSettings
from conveyor_executor.store.base import JournalDraft, RunListParams, RunStore
from conveyor_executor.watch import RunUpdate, WatchHub

log = logging.getLogger(__name__)


class ExecutorEngine:
    def __init__(
        self,
        store: RunStore,
        pool: WorkerPool,
        hub: WatchHub,
        settings: ExecutorSettings,
        clock: Clock,
        watch_poll_seconds: float = 1.0,
    ) -> None:
        self.store = store
        self.pool = pool
        self.hub = hub
        self.settings = settings
        self.clock = clock
        self.watch_poll_seconds = watch_poll_seconds

    async def run_get(self, ref: RunRef) -> Run:
        return await self.store.run_get(ref)

    async def run_list(self, params: RunListParams) -> list[Run]:
        return await self.store.run_list(params)

    async def step_list(self, ref: RunRef, after_seq: int, limit: int) -> list[StepRecord]:
        return await self.store.step_list(ref, after_seq, limit)

    async def output_get(self, ref: OutputRef) -> Output:
        return await self.store.output_get(ref)

    async def output_list(
        self, ref: RunRef, after: tuple[int, str] | None, limit: int
    ) -> list[Output]:
        return await self.store.output_list(ref, after, limit)

    async def job_usage(self, namespace: str, job: str) -> JobUsage:
        return await self.store.job_usage(namespace, job)

    async def abort(self, ref: RunRef, reason: str) -> Run:
        """Stop a run: at once when it runs here, else through a cancel of its work order.

        A run on another executor learns of the cancel on its next heartbeat.
        """
        run = await self.store.run_get(ref)
        reason = reason or "aborted by request"
        # Terminal first: a success is recorded before its order is completed, so a run
        # still reporting here can already be SUCCEEDED, and is no longer abortable.
        if run.state in TERMINAL:
            raise RunNotAbortable(ref, run.state)
        ctx = self.pool.context_of(ref)
        if ctx is not None:
            ctx.stop(StopCause.ABORT, reason)
            return run
        queue = self.pool.queue
        if queue is None:
            raise Unavailable("the work-order queue is not reachable from this executor yet")
        try:
            order = await queue.cancel(run.origin.work_order, reason)
        except grpc.aio.AioRpcError as error:
            if error.code() is grpc.StatusCode.FAILED_PRECONDITION:
                raise RunNotAbortable(ref, run.state, error.details() or "") from None
            raise
        if order.state == queue_pb.WORK_ORDER_STATE_CANCELLED and run.state is RunState.PENDING:
            # Waiting for a retry: no executor holds it, so the run ends here.
            failure = ClassifiedError.of(ErrorType.ABORTED, f"run aborted: {reason}")
            journal = JournalDraft(
                type="executor.run.aborted",
                namespace=ref.namespace,
                at=self.clock.now(),
                subjects={"run": ref.run_id, "work_order": order.id},
                correlation_id=run.origin.correlation_id,
                trace_id=run.origin.trace_id,
                attributes={"attempt": str(order.attempt), "error_type": "aborted"},
            )
            run = await self.store.run_abort_pending(ref, failure, self.clock.now(), (journal,))
            self.hub.publish(ref, run=run)
        return run

    async def watch(self, ref: RunRef) -> AsyncIterator[RunUpdate]:
        """The run now, then its updates; ends after the run reaches a terminal state.

        Updates come from this process's runs; a run on another executor is
        followed by re-reading it every `watch_poll_seconds`.
        """
        with self.hub.subscribe(ref) as subscription:
            run = await self.store.run_get(ref)
            yield RunUpdate(run=run)
            last_state = run.state
            while last_state not in TERMINAL:
                update = await subscription.get(self.watch_poll_seconds)
                if update is None:
                    run = await self.store.run_get(ref)
                    if run.state is last_state:
                        continue
                    update = RunUpdate(run=run)
                if update.run is not None:
                    last_state = update.run.state
                yield update
