"""Hosting users' Python tasks (conveyor.App): the executor's runner for task orders.

A task order's payload is the SDK's wire format (`conveyor_sdk._wire`): the
task's name and its JSON arguments. The host finds the task in the apps it was
given, binds the arguments (rebuilding pydantic models and dataclasses from
the annotations), and runs it: async functions on the event loop, sync ones
in a bounded thread pool. The outcome is the JSON of the return value, or a
classified failure:

* the task is not defined here, or the arguments do not fit: invalid_input,
  never retried (a code version mismatch between submitter and worker);
* the attempt ran past the task's timeout: timeout, retryable;
* it raised `conveyor.NonRetryable` or a type its `Retry.non_retryable` names:
  handler_logic, not retryable; any other exception: handler_logic, retryable
  (the queue's retry policy decides whether another attempt follows);
* it returned something that is not JSON: handler_logic, not retryable.

The exception's traceback is saved as the run's output "traceback" and named
in the failure's details.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
import functools
import inspect
import logging
import traceback
import typing
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from conveyor_executor.context import AttemptContext
from conveyor_executor.domain.failure import ClassifiedError, ErrorType
from conveyor_executor.runners.context import RunnerOutcome
from conveyor_sdk import App, NonRetryable, Task, TaskCancelled, TaskContext
from conveyor_sdk._wire import NotJson, TaskCall, dump_json, from_json

log = logging.getLogger(__name__)
MAX_TRACEBACK_BYTES = 16_384


class TaskHost:
    """The tasks of the apps one executor hosts, by (namespace, task name)."""

    def __init__(self, apps: Sequence[App], threads: int) -> None:
        self.apps = tuple(apps)
        self.tasks: dict[tuple[str, str], Task[Any, Any]] = {
            (app.namespace, name): task for app in self.apps for name, task in app.tasks.items()
        }
        self._threads = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="conveyor-task")

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)

    def leases(self) -> dict[str, tuple[str, ...]]:
        """Namespace -> the queues of the tasks hosted in it."""
        out: dict[str, list[str]] = {}
        for app in self.apps:
            out.setdefault(app.namespace, []).extend(app.queues)
        return {ns: tuple(dict.fromkeys(queues)) for ns, queues in out.items()}

    def _not_found(self, namespace: str, name: str) -> ClassifiedError:
        defined = sorted(n for ns, n in self.tasks if ns == namespace)
        where = (
            f"namespace {namespace!r} defines: {', '.join(defined)}"
            if defined
            else (f"no app hosted here has namespace {namespace!r}")
        )
        return ClassifiedError.of(
            ErrorType.INVALID_INPUT, f"task not found: {name[:128]} ({where})", task=name[:128]
        )

    async def run(
        self, call: TaskCall, ctx: AttemptContext, correlation_id: str, now: dt.datetime
    ) -> RunnerOutcome:
        task = self.tasks.get((ctx.namespace, call.task))
        if task is None:
            return _failed(self._not_found(ctx.namespace, call.task))
        timeout = task.options.timeout_seconds
        task_ctx = TaskContext(
            task=task.name,
            namespace=ctx.namespace,
            work_order_id=ctx.run_id,
            attempt=ctx.attempt,
            correlation_id=correlation_id,
            deadline=None if timeout is None else now + dt.timedelta(seconds=timeout),
            report_progress=ctx.set_progress,
            loop=asyncio.get_running_loop(),
        )
        try:
            args, kwargs = _bind(task, call, task_ctx)
        except (TypeError, ValueError) as exc:
            return _failed(
                ClassifiedError.of(
                    ErrorType.INVALID_INPUT, f"arguments do not fit task {task.name}: {exc}"[:500]
                )
            )
        watcher = asyncio.create_task(_forward_cancel(ctx, task_ctx))
        try:
            value = await asyncio.wait_for(self._call(task, args, kwargs), timeout)
        except TimeoutError:
            task_ctx._cancel()  # a sync task may still be running: let it see it
            error = ClassifiedError(
                ErrorType.TIMEOUT, f"task {task.name} ran past its timeout of {timeout:g}s", True
            )
            return _failed(error, task_ctx)
        except asyncio.CancelledError:
            task_ctx._cancel()
            raise
        except TaskCancelled as exc:  # the task saw ctx.cancelled and stopped
            error = ClassifiedError.of(ErrorType.ABORTED, f"task {task.name} stopped: {exc}")
            return _failed(error, task_ctx)
        except Exception as exc:
            return _failed(await _classify(task, exc, ctx), task_ctx)
        finally:
            watcher.cancel()
        try:
            result = dump_json(value, f"the return value of task {task.name}")
        except NotJson as exc:
            return _failed(ClassifiedError.of(ErrorType.HANDLER_LOGIC, str(exc)[:500]), task_ctx)
        usage = task_ctx.usage
        return RunnerOutcome(
            True,
            True,
            f"task {task.name} returned {len(result)} bytes of JSON",
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cost_usd=usage.cost_usd,
            result=result,
        )

    async def _call(self, task: Task[Any, Any], args: list[Any], kwargs: dict[str, Any]) -> Any:
        if task.is_async:
            return await task.fn(*args, **kwargs)
        call = functools.partial(contextvars.copy_context().run, task.fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._threads, call)


def _bind(
    task: Task[Any, Any], call: TaskCall, task_ctx: TaskContext
) -> tuple[list[Any], dict[str, Any]]:
    leading = (task_ctx,) if task.wants_context else ()
    bound = task.signature.bind(*leading, *call.args, **call.kwargs)
    if not bound.arguments:
        return [], {}
    hints = _hints(task.fn)
    for name, value in list(bound.arguments.items()):
        parameter = task.signature.parameters[name]
        if value is task_ctx or parameter.kind is inspect.Parameter.VAR_KEYWORD:
            continue
        if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            continue
        bound.arguments[name] = from_json(value, hints.get(name))
    return list(bound.args), dict(bound.kwargs)


@functools.lru_cache(maxsize=4096)
def _hints(fn: Any) -> dict[str, Any]:
    """The task function's resolved annotations, once per function (typing.get_type_hints
    evaluates every annotation: about 20 µs per call here, and 3 % of the worker's samples
    in the paced SDK window)."""
    try:
        return typing.get_type_hints(fn)
    except Exception:  # unresolvable annotations: pass the JSON as it is
        return {}


async def _forward_cancel(ctx: AttemptContext, task_ctx: TaskContext) -> None:
    await ctx.cancelled.wait()
    task_ctx._cancel()


async def _classify(task: Task[Any, Any], exc: Exception, ctx: AttemptContext) -> ClassifiedError:
    kind = type(exc)
    non_retryable = isinstance(exc, (NonRetryable, *task.options.retry.non_retryable))
    text = "".join(traceback.format_exception(exc))
    ref = await ctx.save_output(
        "traceback", text.encode()[-MAX_TRACEBACK_BYTES:], truncated=len(text) > MAX_TRACEBACK_BYTES
    )
    details = {"exception": f"{kind.__module__}.{kind.__qualname__}"[:256]}
    if ref:
        details["traceback"] = ref
    if isinstance(exc, NonRetryable):
        details.update({k[:64]: v[:256] for k, v in exc.details.items()})
    message = f"{kind.__name__}: {exc}" if str(exc) else kind.__name__
    log.info("task %s attempt %d raised %s", task.name, ctx.attempt, kind.__name__)
    return ClassifiedError(ErrorType.HANDLER_LOGIC, message[:1000], not non_retryable, details)


def _failed(error: ClassifiedError, task_ctx: TaskContext | None = None) -> RunnerOutcome:
    usage = task_ctx.usage if task_ctx is not None else None
    return RunnerOutcome(
        False,
        False,
        error.message,
        error,
        input_tokens=usage.input_tokens if usage else 0,
        output_tokens=usage.output_tokens if usage else 0,
        cost_usd=usage.cost_usd if usage else 0.0,
    )
