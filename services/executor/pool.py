"""The worker pool: lease orders from the queue and run them with bounded concurrency.

* Leasing: one long-poll call at a time asks for as many orders as there are
  free slots (at most `max_lease_batch`); with no free slot it waits for one.
* Stopping (SIGTERM): no new lease call starts; the one in flight is let
  finish (at most `lease_wait_seconds`: cancelling it could lose orders the
  queue leased but never delivered) and what it brings is handed back at once;
  in-flight runs get `drain_timeout_seconds` to finish; the rest are told to
  stop and are failed retryable ("executor shutting down") so another
  executor takes them.
"""

from __future__ import annotations

import asyncio
import logging
import time

from opentelemetry import metrics

from conveyor.common.v1 import types_pb2
from conveyor.queue.v1.service_pb2 import LeasedWorkOrder
from conveyor_core.tasks import cancel_and_wait
from conveyor_executor.attempt import SHUTTING_DOWN, AttemptDeps, AttemptExecution
from conveyor_executor.context import AttemptContext, StopCause
from conveyor_executor.domain.failure import ErrorType
from conveyor_executor.domain.model import RunRef, RunState
from conveyor_executor.queue_client import QueueClient

log = logging.getLogger(__name__)
_meter = metrics.get_meter("conveyor.executor")
RUNS = _meter.create_counter("conveyor.executor.runs", description="Attempts ended, by outcome")
RUN_DURATION = _meter.create_histogram(
    "conveyor.executor.run.duration", unit="s", description="Duration of one attempt"
)
IN_FLIGHT = _meter.create_up_down_counter(
    "conveyor.executor.runs.in_flight", description="Attempts running now"
)


class WorkerPool:
    def __init__(self, deps: AttemptDeps) -> None:
        self.deps = deps
        self.settings = deps.settings
        self.queue: QueueClient | None = None
        self.active: dict[RunRef, AttemptExecution] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._slot_freed = asyncio.Event()
        self._lease_task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def running(self) -> bool:
        return self._lease_task is not None and not self._lease_task.done()

    def context_of(self, ref: RunRef) -> AttemptContext | None:
        execution = self.active.get(ref)
        return None if execution is None else execution.ctx

    def start(self, queue: QueueClient) -> None:
        """Start leasing from `queue`; idempotent."""
        if self._lease_task is None and not self._stopping:
            self.queue = queue
            self._lease_task = asyncio.create_task(self._lease_forever(), name="executor-lease")

    async def stop(self) -> None:
        """Stop leasing, drain in-flight runs, hand over the rest; idempotent."""
        self._stopping = True
        self._slot_freed.set()
        task, self._lease_task = self._lease_task, None
        if task is not None:
            limit = self.settings.lease_wait_seconds + self.settings.queue_call_timeout_seconds
            await asyncio.wait({task}, timeout=limit)
            await cancel_and_wait(task)
        if not self._tasks:
            return
        drain = self.settings.drain_timeout_seconds
        log.info("draining %d runs (up to %.1fs)", len(self._tasks), drain)
        if drain > 0:
            await asyncio.wait(set(self._tasks), timeout=drain)
        for execution in list(self.active.values()):
            execution.ctx.stop(StopCause.SHUTDOWN, "drain timeout passed")
        if self._tasks:
            # Each run gets the abort grace plus time to report to the queue and record it.
            s = self.settings
            reporting = s.queue_call_timeout_seconds * (s.queue_report_attempts + 1)
            backoff = s.queue_report_backoff_seconds * 2**s.queue_report_attempts
            limit = s.abort_grace_seconds + reporting + backoff
            await asyncio.wait(set(self._tasks), timeout=limit)
        for leftover in list(self._tasks):
            leftover.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks))

    # -- leasing ----------------------------------------------------------------------

    async def _lease_forever(self) -> None:
        assert self.queue is not None
        s = self.settings
        while not self._stopping:
            free = s.concurrency - len(self._tasks)
            if free <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            try:
                leased = await self.queue.lease(
                    s.namespace,
                    s.queues,
                    min(free, s.max_lease_batch),
                    s.lease_wait_seconds,
                    s.lease_seconds,
                    self.deps.identity,
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("lease call failed (%s); retrying", _describe(exc))
                await asyncio.sleep(s.lease_error_backoff_seconds)
                continue
            for order in leased:
                if self._stopping:
                    self._launch_handover(order)
                else:
                    self._launch(AttemptExecution(self.deps, self.queue, order))

    def _launch_handover(self, order: LeasedWorkOrder) -> None:
        """Give an order leased while stopping straight back to the queue."""
        assert self.queue is not None
        failure = types_pb2.Failure(
            type=ErrorType.INTERNAL.value, message=SHUTTING_DOWN, retryable=True
        )
        task = asyncio.create_task(self._hand_back(order, failure))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _hand_back(self, order: LeasedWorkOrder, failure: types_pb2.Failure) -> None:
        assert self.queue is not None
        try:
            await self.queue.fail(order, failure)
        except Exception as exc:
            log.warning("order %s not handed back (%s)", order.work_order.name, _describe(exc))

    def _launch(self, execution: AttemptExecution) -> None:
        ref = execution.ref
        self.active[ref] = execution
        task = asyncio.create_task(self._execute(execution), name=f"run:{ref.run_id}")
        self._tasks.add(task)

        def done(finished: asyncio.Task[None]) -> None:
            self._tasks.discard(finished)
            if self.active.get(ref) is execution:
                del self.active[ref]
            self._slot_freed.set()

        task.add_done_callback(done)

    async def _execute(self, execution: AttemptExecution) -> None:
        kind = execution.decoded.origin.kind.value
        IN_FLIGHT.add(1, {"kind": kind})
        started = time.monotonic()
        state = RunState.FAILED
        try:
            state = await execution.run()
        except asyncio.CancelledError:
            log.warning("run %s cancelled before it reported", execution.ref.name)
            raise
        except Exception:
            log.exception("run %s: attempt crashed", execution.ref.name)
        finally:
            IN_FLIGHT.add(-1, {"kind": kind})
            RUN_DURATION.record(time.monotonic() - started, {"kind": kind})
            RUNS.add(1, {"kind": kind, "outcome": state.value.lower()})


def _describe(error: Exception) -> str:
    code = getattr(error, "code", None)
    if callable(code):
        return f"{code().name}: {getattr(error, 'details', lambda: '')()}"
    return f"{type(error).__name__}: {error}"
