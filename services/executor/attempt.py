"""One attempt of one leased work order: run it, heartbeat it, report it, record it.

The attempt runs in a span that is a child of the order's `traceparent`, with
the order's correlation id in `conveyor_core.context`, so its heartbeats,
completion, HTTP calls and journal records all join the order's trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, replace
from typing import Any

import grpc
from opentelemetry import trace

from conveyor.common.v1 import job_pb2, types_pb2
from conveyor.queue.v1 import messages_pb2 as queue_pb
from conveyor.queue.v1 import service_pb2 as queue_rpc
from conveyor_core.clock import Clock
from conveyor_core.context import correlation_scope, is_valid_correlation_id
from conveyor_core.telemetry import trace_context_of
from conveyor_executor import metrics
from conveyor_executor.context import AttemptContext, StopCause
from conveyor_executor.domain.failure import ClassifiedError, ErrorType
from conveyor_executor.domain.invocation import (
    JOB_RESULT_CONTENT_TYPE,
    DecodedOrder,
    decode_order,
)
from conveyor_executor.domain.model import AttemptEnd, RunKind, RunRef, RunState, Usage
from conveyor_executor.queue_client import QueueClient, lease_lost
from conveyor_executor.recording import RunRecorder
from conveyor_executor.runners.context import RunContext, RunnerOutcome
from conveyor_executor.secrets import SecretSource
from conveyor_executor.settings import ExecutorSettings
from conveyor_executor.store.base import AttemptFinish, AttemptStart, JournalDraft
from conveyor_executor.tasks import TaskHost
from conveyor_executor.watch import WatchHub
from conveyor_executor.webhook import WebhookNotifier, mode_of
from conveyor_executor.workflow.session import SessionRunner
from conveyor_sdk import RESULT_CONTENT_TYPE

log = logging.getLogger(__name__)
SHUTTING_DOWN = "executor shutting down"
tracer = trace.get_tracer("conveyor.executor")

#: Runs one target kind ("http", "command"): the pool's only dependency on the runners.
Runner = Callable[[job_pb2.JobInvocation, RunContext], Coroutine[Any, Any, RunnerOutcome]]

# Order state after FailWorkOrder -> the run's state.
_RUN_STATE_AFTER_FAIL = {
    queue_pb.WORK_ORDER_STATE_QUEUED: RunState.PENDING,
    queue_pb.WORK_ORDER_STATE_FAILED: RunState.FAILED,
    queue_pb.WORK_ORDER_STATE_DEAD: RunState.FAILED,
    queue_pb.WORK_ORDER_STATE_CANCELLED: RunState.ABORTED,
}
_JOURNAL_TYPE = {
    RunState.SUCCEEDED: "executor.run.succeeded",
    RunState.FAILED: "executor.run.failed",
    RunState.ABORTED: "executor.run.aborted",
    RunState.PENDING: "executor.run.attempt_failed",
}


@dataclass(frozen=True)
class AttemptDeps:
    settings: ExecutorSettings
    recorder: RunRecorder
    hub: WatchHub
    secrets: SecretSource
    clock: Clock
    runners: Mapping[str, Runner]
    webhook: WebhookNotifier
    identity: str
    task_host: TaskHost | None = None  # the Python apps this executor hosts
    sessions: SessionRunner | None = None  # their workflows


def failed(error: ClassifiedError, summary: str = "") -> RunnerOutcome:
    return RunnerOutcome(False, False, summary or error.message, error)


class AttemptExecution:
    """Everything about one lease of one order; `run()` never raises (except cancellation)."""

    def __init__(
        self, deps: AttemptDeps, queue: QueueClient, leased: queue_rpc.LeasedWorkOrder
    ) -> None:
        self.deps = deps
        self.queue = queue
        self.leased = leased
        order = leased.work_order
        self.ref = RunRef(order.namespace, order.id)
        self.decoded: DecodedOrder = decode_order(order, deps.settings.max_invocation_bytes)
        self.ctx = AttemptContext(
            self.ref,
            order.attempt,
            deps.recorder,
            deps.secrets,
            deps.hub,
            deps.clock,
            deps.settings.max_output_bytes,
        )

    # -- the attempt ---------------------------------------------------------------

    async def run(self) -> RunState:
        order = self.leased.work_order
        correlation = (
            order.correlation_id if is_valid_correlation_id(order.correlation_id) else None
        )
        attributes: dict[str, str | int] = {
            "conveyor.run": self.ref.name,
            "conveyor.work_order.id": order.id,
            "conveyor.work_order.attempt": order.attempt,
        }
        if correlation:
            attributes["conveyor.correlation_id"] = correlation
        with (
            correlation_scope(correlation),
            tracer.start_as_current_span(
                "executor.run", context=trace_context_of(order.traceparent), attributes=attributes
            ) as span,
        ):
            state = await self._run_in_span()
            span.set_attribute("conveyor.run.state", state.value)
            return state

    async def _run_in_span(self) -> RunState:
        d = self.deps
        start = d.clock.now()
        first = self.ctx.attempt <= 1
        journal = self._journal("executor.run.started" if first else "executor.run.attempt_started")
        await d.recorder.start_attempt(
            AttemptStart(
                self.ref, self.decoded.origin, self.ctx.attempt, d.identity, start, (journal,)
            )
        )
        heartbeat = asyncio.create_task(
            self._heartbeat_forever(), name=f"heartbeat:{self.ref.run_id}"
        )
        try:
            outcome = await self._outcome()
            outcome = await self._notify(outcome)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
        if outcome.succeeded and self.ctx.stop_cause is not StopCause.LEASE_LOST:
            attempt_state, run_state = await self._succeed(outcome)
        else:
            attempt_state, run_state = await self._report(outcome)
            await self._record_end(outcome, attempt_state, run_state)
        log.info(
            "run %s attempt %d: %s (run %s)",
            self.ref.name,
            self.ctx.attempt,
            attempt_state.value,
            run_state.value,
            extra={"work_order_id": self.leased.work_order.id},
        )
        return run_state

    async def _succeed(self, outcome: RunnerOutcome) -> tuple[RunState, RunState]:
        """Record the success, then complete the order: once the queue says SUCCEEDED, the
        run's record (state, usage, summary) is already durable. Should the queue refuse the
        completion (the lease was lost), the record is corrected: attempt FAILED, run
        PENDING (the order is someone else's now), its usage counted once."""
        await self._record_end(outcome, RunState.SUCCEEDED, RunState.SUCCEEDED)
        try:
            await self.queue.complete(self.leased, self._result(outcome))
        except grpc.aio.AioRpcError as error:
            log.warning(
                "run %s: queue refused the outcome (%s: %s); the lease will expire",
                self.ref.name,
                error.code().name,
                error.details(),
            )
            refused = ClassifiedError(
                ErrorType.INTERNAL,
                f"the queue refused the completion: {error.code().name}: {error.details()}"[:500],
                True,
                {},
            )
            correction = replace(outcome, succeeded=False, error=refused, cost_usd=0.0)
            correction = replace(correction, input_tokens=0, output_tokens=0)
            await self._record_end(correction, RunState.FAILED, RunState.PENDING)
            return RunState.FAILED, RunState.PENDING
        return RunState.SUCCEEDED, RunState.SUCCEEDED

    async def _record_end(
        self, outcome: RunnerOutcome, attempt_state: RunState, run_state: RunState
    ) -> None:
        d = self.deps
        end = AttemptEnd(
            attempt_state=attempt_state,
            run_state=run_state,
            at=d.clock.now(),
            error=outcome.error,
            work_found=outcome.work_found,
            summary=outcome.summary[: d.settings.max_summary_length],
            usage=Usage(outcome.input_tokens, outcome.output_tokens, outcome.cost_usd),
        )
        metrics.attempt_ended(
            self.decoded.origin.kind.value,
            self.decoded.origin.job,
            None if outcome.succeeded or outcome.error is None else outcome.error.type.value,
            outcome.input_tokens,
            outcome.output_tokens,
            outcome.cost_usd,
        )
        journal = self._journal(_JOURNAL_TYPE[run_state], end.error, attempt_state=attempt_state)
        await d.recorder.finish_attempt(AttemptFinish(self.ref, self.ctx.attempt, end, (journal,)))

    async def _outcome(self) -> RunnerOutcome:
        if self.decoded.error is not None:
            return failed(self.decoded.error)
        if self.decoded.task_call:
            start = self._start_task()
        elif self.decoded.origin.kind is RunKind.WORKFLOW:
            start = self._start_session()
        else:
            start = self._start_job()
        if isinstance(start, RunnerOutcome):
            return start
        outcome = await self._run_runner(start)
        if self.ctx.stop_cause is not None and (outcome is None or not outcome.succeeded):
            return failed(self._stop_error())
        if outcome is None:  # pragma: no cover - only when stopped, handled above
            return failed(ClassifiedError.of(ErrorType.INTERNAL, "runner returned nothing"))
        return outcome

    def _start_job(self) -> Callable[[], Coroutine[Any, Any, RunnerOutcome]] | RunnerOutcome:
        invocation = self.decoded.invocation
        assert invocation is not None
        runner = self.deps.runners.get(self.decoded.origin.kind.value)
        if runner is None:
            return failed(
                ClassifiedError.of(
                    ErrorType.INVALID_INPUT,
                    f"this executor has no runner for {self.decoded.origin.kind.value} jobs",
                )
            )
        return lambda: runner(invocation, self.ctx)

    def _start_task(self) -> Callable[[], Coroutine[Any, Any, RunnerOutcome]] | RunnerOutcome:
        call, host = self.decoded.task_call, self.deps.task_host
        assert call is not None
        if host is None:
            return failed(
                ClassifiedError.of(
                    ErrorType.INVALID_INPUT,
                    f"task {call.task[:128]}: this executor hosts no Python app; run its app "
                    "with `conveyor worker module:app` (docs/sdk.md)",
                )
            )
        correlation = self.leased.work_order.correlation_id
        return lambda: host.run(call, self.ctx, correlation, self.deps.clock.now())

    def _start_session(self) -> Callable[[], Coroutine[Any, Any, RunnerOutcome]] | RunnerOutcome:
        invocation, sessions = self.decoded.invocation, self.deps.sessions
        assert invocation is not None
        target = invocation.target.workflow
        if sessions is None:
            return failed(
                ClassifiedError.of(
                    ErrorType.INVALID_INPUT,
                    f"workflow {target.workflow[:128]}: this executor hosts no Python app; run "
                    "the app defining it with `conveyor worker module:app` (docs/workflows.md)",
                )
            )
        found = sessions.preflight(self.ref.namespace, target)
        if isinstance(found, RunnerOutcome):
            return found
        order = self.leased.work_order
        return lambda: sessions.run(
            target, self.ctx, order.correlation_id, self.decoded.origin.trace_id
        )

    async def _run_runner(
        self, start: Callable[[], Coroutine[Any, Any, RunnerOutcome]]
    ) -> RunnerOutcome | None:
        """The runner's outcome; None when it had to be cancelled after a stop request."""
        task = asyncio.create_task(start())
        stopped = asyncio.create_task(self.ctx.cancelled.wait())
        try:
            await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not task.done():
                # Asked to stop: the runner gets a grace period to stop by itself.
                await asyncio.wait({task}, timeout=self.deps.settings.abort_grace_seconds)
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
                return None
            return task.result()
        except asyncio.CancelledError:
            task.cancel()
            raise
        except Exception as exc:
            log.exception("run %s: runner crashed", self.ref.name)
            return failed(
                ClassifiedError.of(
                    ErrorType.INTERNAL, f"runner crashed: {type(exc).__name__}: {exc}"[:500]
                )
            )
        finally:
            stopped.cancel()

    def _stop_error(self) -> ClassifiedError:
        cause, reason = self.ctx.stop_cause, self.ctx.stop_reason
        if cause is StopCause.SHUTDOWN:
            return ClassifiedError(ErrorType.INTERNAL, f"{SHUTTING_DOWN}: {reason}", True, {})
        if cause is StopCause.LEASE_LOST:
            return ClassifiedError(ErrorType.INTERNAL, f"lease lost: {reason}", True, {})
        return ClassifiedError.of(ErrorType.ABORTED, f"run aborted: {reason}")

    # -- integrations -------------------------------------------------------------------

    async def _notify(self, outcome: RunnerOutcome) -> RunnerOutcome:
        invocation = self.decoded.invocation
        if invocation is None or not invocation.HasField("notification"):
            return outcome
        webhook = invocation.notification
        mode = mode_of(webhook)
        if mode == job_pb2.INTEGRATION_FAILURE_MODE_DISABLED:
            return outcome
        error = await self.deps.webhook.notify(webhook, self._summary(outcome), self.ctx)
        if error is None:
            return outcome
        if mode == job_pb2.INTEGRATION_FAILURE_MODE_FAIL_FAST and outcome.succeeded:
            return replace(
                outcome, succeeded=False, error=error, summary=f"{outcome.summary}; {error.message}"
            )
        log.warning("run %s: %s (best effort: outcome stands)", self.ref.name, error.message)
        await self.deps.recorder.journal(
            [self._journal("executor.integration.failed", error, integration="completion_webhook")]
        )
        return outcome

    def _summary(self, outcome: RunnerOutcome) -> dict[str, Any]:
        error = outcome.error
        return {
            "run": self.ref.name,
            "work_order": self.leased.work_order.name,
            "job": self.decoded.origin.job,
            "attempt": self.ctx.attempt,
            "succeeded": outcome.succeeded,
            "work_found": outcome.work_found,
            "summary": outcome.summary,
            "error": None
            if error is None
            else {"type": error.type.value, "message": error.message, "retryable": error.retryable},
            "usage": {
                "input_tokens": outcome.input_tokens,
                "output_tokens": outcome.output_tokens,
                "cost_usd": outcome.cost_usd,
            },
        }

    # -- the queue --------------------------------------------------------------------

    async def _heartbeat_forever(self) -> None:
        s = self.deps.settings
        while True:
            await asyncio.sleep(s.heartbeat_interval_seconds)
            await self.heartbeat_once()
            if self.ctx.stop_cause is StopCause.LEASE_LOST:
                return

    async def heartbeat_once(self) -> None:
        ctx = self.ctx
        progress = ctx.progress if ctx.progress is not ctx.progress_sent else None
        progress_pb = None
        if progress is not None:
            progress_pb = queue_pb.Progress(percent=progress.percent, message=progress.message)
        try:
            response = await self.queue.heartbeat(
                self.leased, self.deps.settings.lease_seconds, progress_pb
            )
        except grpc.aio.AioRpcError as error:
            if lease_lost(error):
                ctx.stop(StopCause.LEASE_LOST, error.details() or error.code().name)
            else:
                log.warning("run %s: heartbeat failed: %s", self.ref.name, error.code().name)
            return
        if progress is not None:
            ctx.progress_sent = progress
            # A slow database must not delay the next heartbeat (and so lose the lease).
            timeout = self.deps.settings.queue_call_timeout_seconds
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.deps.recorder.progress(self.ref, progress), timeout)
        if response.cancel_requested:
            ctx.stop(StopCause.ABORT, "the work order was cancelled")

    async def _report(self, outcome: RunnerOutcome) -> tuple[RunState, RunState]:
        """Fail the order (a failed attempt, or any after the lease was lost); returns
        (attempt state, run state)."""
        if self.ctx.stop_cause is StopCause.LEASE_LOST:
            return RunState.FAILED, RunState.PENDING  # the order is someone else's now
        try:
            assert outcome.error is not None
            order = await self.queue.fail(self.leased, self._failure(outcome.error))
        except grpc.aio.AioRpcError as error:
            log.warning(
                "run %s: queue refused the outcome (%s: %s); the lease will expire",
                self.ref.name,
                error.code().name,
                error.details(),
            )
            return RunState.FAILED, RunState.PENDING
        aborted = outcome.error.type is ErrorType.ABORTED
        run_state = _RUN_STATE_AFTER_FAIL.get(order.state, RunState.FAILED)
        if aborted and run_state is RunState.FAILED:
            run_state = RunState.ABORTED
        return (RunState.ABORTED if aborted else RunState.FAILED), run_state

    def _result(self, outcome: RunnerOutcome) -> types_pb2.Payload:
        if outcome.result is not None:  # a Python task: its JSON return value
            return types_pb2.Payload(data=outcome.result, content_type=RESULT_CONTENT_TYPE)
        result = job_pb2.JobResult(
            run=self.ref.name,
            work_found=outcome.work_found,
            summary=outcome.summary[: self.deps.settings.max_summary_length],
            input_tokens=outcome.input_tokens,
            output_tokens=outcome.output_tokens,
            cost_usd=outcome.cost_usd,
        )
        return types_pb2.Payload(
            data=result.SerializeToString(), content_type=JOB_RESULT_CONTENT_TYPE
        )

    def _failure(self, error: ClassifiedError) -> types_pb2.Failure:
        return types_pb2.Failure(
            type=error.type.value,
            message=error.message[: self.deps.settings.max_failure_message_length],
            retryable=error.retryable,
            details={str(k)[:64]: str(v)[:256] for k, v in error.details.items()},
        )

    def _journal(
        self, type_: str, error: ClassifiedError | None = None, **attributes: Any
    ) -> JournalDraft:
        order = self.leased.work_order
        values = {"attempt": str(self.ctx.attempt), "kind": self.decoded.origin.kind.value}
        values.update({k: str(getattr(v, "value", v)) for k, v in attributes.items()})
        if error is not None:
            values.update(
                error_type=error.type.value,
                error_retryable=str(error.retryable).lower(),
                error_message=error.message[:256],
            )
        subjects = {"run": self.ref.run_id, "work_order": order.id}
        if self.decoded.origin.job:
            subjects["job"] = self.decoded.origin.job
        return JournalDraft(
            type=type_,
            namespace=self.ref.namespace,
            at=self.deps.clock.now(),
            subjects=subjects,
            correlation_id=order.correlation_id,
            trace_id=self.decoded.origin.trace_id,
            attributes=values,
        )
