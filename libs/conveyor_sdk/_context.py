"""What a running task sees: `ctx`, given to a task whose first parameter is `ctx`
(or is annotated `conveyor.TaskContext`).

It works the same from async tasks (on the worker's event loop) and sync tasks
(in the worker's thread pool): `progress` and `record_usage` are safe from
any thread.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from conveyor_sdk._errors import TaskCancelled

__all__ = ["HandlerContext", "TaskContext", "Usage"]


@dataclass
class Usage:
    """Token usage and cost recorded by a task (summed over its `record_usage` calls)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0


class TaskContext:
    """The context of one attempt of one task.

    Attributes:
        task: the task's name.
        namespace: the app's namespace.
        work_order_id: the work order's id (also the run's id).
        run: the run's resource name, namespaces/{namespace}/runs/{id}.
        attempt: 1 for the first attempt.
        deadline: when the attempt's timeout passes (UTC), or None.
        correlation_id: the order's correlation id (also on the logger's records).
        logger: a logger whose records carry the run's correlation and work order ids.
    """

    def __init__(
        self,
        *,
        task: str,
        namespace: str,
        work_order_id: str,
        attempt: int,
        correlation_id: str,
        deadline: dt.datetime | None,
        report_progress: Callable[[float, str], None],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.task = task
        self.namespace = namespace
        self.work_order_id = work_order_id
        self.run = f"namespaces/{namespace}/runs/{work_order_id}"
        self.attempt = attempt
        self.deadline = deadline
        self.correlation_id = correlation_id
        self.usage = Usage()
        self._report = report_progress
        self._loop = loop
        self._cancelled = threading.Event()
        self._lock = threading.Lock()
        self._loop_thread = threading.get_ident()  # made on the loop's thread
        self.logger = logging.LoggerAdapter(
            logging.getLogger(f"conveyor.task.{task}"),
            {"correlation_id": correlation_id, "work_order_id": work_order_id},
        )

    def progress(self, percent: float, message: str = "") -> None:
        """Report progress (0-100 and a line for people); sent with the next heartbeat
        and shown by WatchRun. Cheap: call it as often as you like."""
        percent = min(100.0, max(0.0, float(percent)))
        if threading.get_ident() == self._loop_thread:
            self._report(percent, message)
        else:
            self._loop.call_soon_threadsafe(self._report, percent, message)

    def record_usage(
        self,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cost_usd: float = 0.0,
        model: str = "",
    ) -> None:
        """Add token usage and cost of an AI call; persisted on the run and summed per task."""
        if min(input_tokens, output_tokens) < 0 or not 0 <= cost_usd < float("inf"):
            raise ValueError("usage must be non-negative and finite")
        with self._lock:
            self.usage.input_tokens += int(input_tokens)
            self.usage.output_tokens += int(output_tokens)
            self.usage.cost_usd += float(cost_usd)
        if model:
            self.logger.debug("usage of %s: %d in, %d out", model, input_tokens, output_tokens)

    @property
    def cancelled(self) -> bool:
        """True once the run was aborted or the worker is stopping: a sync task should
        return (or raise) soon. An async task is also cancelled with CancelledError."""
        return self._cancelled.is_set()

    def raise_if_cancelled(self) -> None:
        """Raise `conveyor.TaskCancelled` once cancelled: the run ends ABORTED."""
        if self._cancelled.is_set():
            raise TaskCancelled(f"task {self.task} was cancelled")

    def _cancel(self) -> None:
        self._cancelled.set()


class HandlerContext(TaskContext):
    """What a workflow handler sees (producer, or a consumer's phases).

    Attributes (besides TaskContext's):
        workflow, handler: the workflow and the handler's name.
        handler_run: the handler run's resource name, namespaces/{ns}/handlerRuns/{id}.
        session: the session's resource name.
        events: a consumer's reserved events (conveyor.ReservedEvent); empty for producers.
        code_version: the app's version running this phase.
    """

    def __init__(
        self,
        *,
        workflow: str,
        handler: str,
        handler_run_id: str,
        session_id: str,
        events: Sequence[Any],
        code_version: str,
        **base: Any,
    ) -> None:
        super().__init__(task=f"{workflow}.{handler}", **base)
        self.workflow = workflow
        self.handler = handler
        self.handler_run_id = handler_run_id
        self.handler_run = f"namespaces/{self.namespace}/handlerRuns/{handler_run_id}"
        self.session = f"namespaces/{self.namespace}/sessions/{session_id}"
        self.events = tuple(events)
        self.code_version = code_version
