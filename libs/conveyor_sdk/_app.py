"""An app: a namespace and the tasks and workflows its code defines.

Decorators only register: nothing runs at import time. A worker loads the app
(`load_app("billing.app:app")`), validates it, and leases only its queues.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, ParamSpec, TypeVar, overload

from conveyor_sdk._context import TaskContext
from conveyor_sdk._options import DurationLike, Retry, seconds_of
from conveyor_sdk._workflow import Workflow

__all__ = ["App", "AppError", "Task", "TaskOptions", "load_app"]

P = ParamSpec("P")
R = TypeVar("R")
_NAMES = {
    "namespace": re.compile(r"[a-z][a-z0-9-]{0,62}", re.ASCII),
    "workflow": re.compile(r"[a-z][a-z0-9_-]{0,62}", re.ASCII),
    "queue": re.compile(r"[a-z][a-z0-9._-]{0,127}", re.ASCII),
}
_TASK_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,127}", re.ASCII)
ConcurrencyKey = str | Callable[..., str] | None


class AppError(ValueError):
    """An app, task or option is defined wrongly; the message names it."""


@dataclass(frozen=True)
class TaskOptions:
    queue: str
    priority: int = 0
    retry: Retry = field(default_factory=Retry)
    timeout_seconds: float | None = None
    heartbeat_timeout_seconds: float | None = None
    concurrency_key: ConcurrencyKey = None


class Task(Generic[P, R]):
    """A function registered as a task. Calling it runs the function here, as a plain call;
    `client.submit(task, ...)` runs it on Conveyor."""

    def __init__(self, app: App, fn: Callable[P, R], name: str, options: TaskOptions) -> None:
        self.app = app
        self.fn = fn
        self.name = name
        self.options = options
        self.is_async = inspect.iscoroutinefunction(fn)
        self.signature = inspect.signature(fn)
        params = list(self.signature.parameters.values())
        self.wants_context = bool(params) and (
            params[0].name == "ctx" or params[0].annotation in (TaskContext, "TaskContext")
        )
        functools.update_wrapper(self, fn)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<conveyor task {self.app.namespace}/{self.name} on queue {self.options.queue}>"

    def concurrency_key_for(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        key = self.options.concurrency_key
        if key is None:
            return ""
        if callable(key):
            return str(key(*args, **kwargs))
        return key.format(*args, **kwargs)


class App:
    """The tasks of one namespace.

    Args:
        namespace: the namespace everything of this app lives in.
        queue: the queue of tasks that name none.
        version: the code version, recorded by workers (e.g. a git commit).
    """

    def __init__(self, namespace: str, *, queue: str = "default", version: str = "") -> None:
        _check_name("namespace", namespace)
        _check_name("queue", queue)
        self.namespace = namespace
        self.default_queue = queue
        self.version = version
        self.tasks: dict[str, Task[Any, Any]] = {}
        self.workflows: dict[str, Workflow] = {}

    def workflow(
        self,
        name: str,
        *,
        queue: str = "workflows",
        iteration_budget: int = 20,
        cost_budget_usd: float | None = None,
    ) -> Workflow:
        """A workflow of this app: register producers and consumers on what it returns.

        Args:
            name: its id in the namespace.
            queue: the queue its sessions run on.
            iteration_budget: consumer runs per session; more work continues in a new session.
            cost_budget_usd: a session stops once its handlers recorded this much cost.
        """
        _check_name("workflow", name)
        _check_name("queue", queue)
        if name in self.workflows:
            raise AppError(f"app {self.namespace!r} already has a workflow named {name!r}")
        if not isinstance(iteration_budget, int) or not 1 <= iteration_budget <= 10_000:
            raise AppError(f"iteration_budget must be 1..10000, got {iteration_budget!r}")
        if cost_budget_usd is not None and not 0 < cost_budget_usd < float("inf"):
            raise AppError(f"cost_budget_usd must be positive, got {cost_budget_usd!r}")
        workflow = Workflow(self, name, queue, iteration_budget, cost_budget_usd)
        self.workflows[name] = workflow
        return workflow

    @overload
    def task(self, fn: Callable[P, R], /) -> Task[P, R]: ...
    @overload
    def task(
        self,
        *,
        name: str | None = None,
        queue: str | None = None,
        priority: int = 0,
        retry: Retry | None = None,
        timeout: DurationLike | None = None,
        heartbeat_timeout: DurationLike | None = None,
        concurrency_key: ConcurrencyKey = None,
    ) -> Callable[[Callable[P, R]], Task[P, R]]: ...

    def task(  # type: ignore[misc]  # mypy misreads the positional-only fn against overload 2
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        queue: str | None = None,
        priority: int = 0,
        retry: Retry | None = None,
        timeout: DurationLike | None = None,
        heartbeat_timeout: DurationLike | None = None,
        concurrency_key: ConcurrencyKey = None,
    ) -> Any:
        """Register a function (async or sync) as a task.

        Args:
            name: the name clients submit it by; default the function's name.
            queue: its queue; default the app's.
            priority: higher runs first (0-1000).
            retry: how failures are retried; default 3 attempts, backoff from 1 s.
            timeout: how long one attempt may run ("30s", seconds, timedelta).
            heartbeat_timeout: lease lost when no heartbeat for this long.
            concurrency_key: at most one order per key runs at once when the queue limits
                keys: text formatted with the arguments ("{customer_id}") or a callable.
        """
        options = TaskOptions(
            queue=queue or self.default_queue,
            priority=priority,
            retry=retry or Retry(),
            timeout_seconds=None if timeout is None else seconds_of(timeout, "timeout"),
            heartbeat_timeout_seconds=None
            if heartbeat_timeout is None
            else seconds_of(heartbeat_timeout, "heartbeat_timeout"),
            concurrency_key=concurrency_key,
        )
        _check_name("queue", options.queue)
        if not isinstance(priority, int) or not 0 <= priority <= 1000:
            raise AppError(f"task priority must be an integer 0..1000, got {priority!r}")

        def register(function: Callable[P, R]) -> Task[P, R]:
            task_name = name or function.__name__
            if not _TASK_NAME.fullmatch(task_name):
                raise AppError(f"task name {task_name!r} must match {_TASK_NAME.pattern}")
            if task_name in self.tasks:
                raise AppError(f"app {self.namespace!r} already has a task named {task_name!r}")
            task = Task(self, function, task_name, options)
            self.tasks[task_name] = task
            return task

        return register(fn) if fn is not None else register

    @property
    def queues(self) -> tuple[str, ...]:
        """The queues of this app's tasks and workflows, in order of first use."""
        queues = [t.options.queue for t in self.tasks.values()]
        queues += [w.queue for w in self.workflows.values()]
        return tuple(dict.fromkeys(queues))

    def validate(self) -> None:
        """Raise AppError when the app cannot be hosted (a worker calls it before leasing)."""
        if not self.tasks and not self.workflows:
            raise AppError(f"app {self.namespace!r} defines no tasks or workflows: nothing to run")
        for workflow in self.workflows.values():
            workflow.validate()


def _check_name(what: str, value: str) -> None:
    pattern = _NAMES[what]
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise AppError(f"{what} {value!r:.70} must match {pattern.pattern}")


def load_app(spec: str) -> App:
    """The App named by "module:attribute" (e.g. "billing.app:app"), validated.

    Raises:
        AppError: the spec, module or attribute is wrong, or the app is invalid.
    """
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise AppError(f"--app {spec!r} must look like module:attribute, e.g. billing.app:app")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise AppError(f"cannot import {module_name!r} for --app {spec!r}: {exc}") from exc
    app = getattr(module, attribute, None)
    if not isinstance(app, App):
        raise AppError(f"{spec!r} is {type(app).__name__}, not a conveyor.App")
    app.validate()
    return app
