"""Workflows: producers and consumers connected by topics (docs/workflows.md).

    shop = app.workflow("shop")

    @shop.producer(schedule=conveyor.every(minutes=5))
    async def poll_orders(ctx, state):
        return conveyor.Produce(state=..., events=[conveyor.Event("orders", ...)])

    @shop.consumer(topic="orders", batch=10)
    class ChargeOrder:
        async def prepare(self, ctx, state): ...
        async def mutate(self, ctx, prepared): ...
        async def next(self, ctx, prepared, result): ...
        async def reconcile(self, ctx, mutation): ...   # optional

Handlers are isolated: state flows only through arguments and return values,
and everything crossing a phase is JSON (it is saved before the next phase).
"""

from __future__ import annotations

import datetime as dt
import inspect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from conveyor_sdk._options import DurationLike, seconds_of

if TYPE_CHECKING:
    from conveyor_sdk._app import App

__all__ = [
    "KEEP_STATE",
    "NO_MUTATION",
    "Consumer",
    "Event",
    "MutationFailed",
    "MutationInfo",
    "MutationResult",
    "Produce",
    "Producer",
    "Reconciled",
    "ReservedEvent",
    "Schedule",
    "Workflow",
    "cron",
    "every",
    "once",
]

HANDLER_NAME = re.compile(r"[a-z][a-z0-9_-]{0,62}", re.ASCII)
TOPIC_NAME = re.compile(r"[a-z][a-z0-9._-]{0,127}", re.ASCII)


def handler_job_id(workflow: str, handler: str) -> str:
    """The scheduler's job and schedule id of a handler (registration creates them)."""
    return f"wf-{workflow}-{handler}".replace("_", "-")[:63].rstrip("-")


def _error(message: str) -> Exception:
    from conveyor_sdk._app import AppError

    return AppError(message)


# -- schedules ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    """When a producer fires: `every(...)`, `cron(...)` or `once(...)`."""

    kind: Literal["every", "cron", "once"]
    every_seconds: float = 0.0
    expression: str = ""
    time_zone: str = "UTC"
    at: dt.datetime | None = None

    def describe(self) -> str:
        if self.kind == "every":
            return f"every {self.every_seconds:g}s"
        if self.kind == "cron":
            return f"cron {self.expression!r} ({self.time_zone})"
        assert self.at is not None
        return f"once at {self.at.isoformat()}"


def every(*, seconds: float = 0, minutes: float = 0, hours: float = 0, days: float = 0) -> Schedule:
    """A fixed interval, e.g. `every(minutes=5)`."""
    total = seconds + 60 * minutes + 3600 * hours + 86400 * days
    if not total >= 1:
        raise _error(f"every(...) must be at least 1 second, got {total:g}s")
    return Schedule("every", every_seconds=float(total))


def cron(expression: str, *, tz: str = "UTC") -> Schedule:
    """A five-field cron expression read in an IANA time zone, e.g. `cron("0 * * * *")`."""
    if len(expression.split()) != 5:
        raise _error(f"cron expression {expression!r} must have five fields")
    return Schedule("cron", expression=expression, time_zone=tz)


def once(at: dt.datetime) -> Schedule:
    """One fire at an instant (timezone-aware)."""
    if at.tzinfo is None:
        raise _error("once(at=...) needs a timezone-aware datetime")
    return Schedule("once", at=at)


# -- what handlers return and receive ----------------------------------------------------


@dataclass(frozen=True)
class Event:
    """An event to publish: its topic, a message id unique within the topic (publishing
    it again is a no-op), a title a person recognises, and a JSON payload."""

    topic: str
    message_id: str
    title: str
    payload: Any = None


class _Keep:
    def __repr__(self) -> str:
        return "conveyor.KEEP_STATE"


KEEP_STATE: Any = _Keep()


@dataclass(frozen=True)
class Produce:
    """What a producer (and a consumer's `next`) returns: the new state and events."""

    state: Any = KEEP_STATE
    events: Sequence[Event] = ()


@dataclass(frozen=True)
class ReservedEvent:
    """An event a consumer run holds (`ctx.events`)."""

    topic: str
    sequence: int
    message_id: str
    title: str
    payload: Any


class _NoMutation:
    def __repr__(self) -> str:
        return "conveyor.NO_MUTATION"


#: Returned by `mutate` when it made no side effect: `next` gets MutationResult "none".
NO_MUTATION: Any = _NoMutation()


@dataclass(frozen=True)
class MutationResult:
    """What `next` receives: "applied" (with `value`), "none" or "skipped"."""

    kind: Literal["applied", "none", "skipped"]
    value: Any = None

    @property
    def applied(self) -> bool:
        return self.kind == "applied"

    @property
    def skipped(self) -> bool:
        return self.kind == "skipped"


class MutationFailed(Exception):
    """Raise from `mutate` when the side effect definitely did not happen (the other
    side refused it): the mutation is `failed`, never `indeterminate`."""


@dataclass(frozen=True)
class MutationInfo:
    """What `reconcile` is asked about: the indeterminate mutation of this run."""

    handler_run: str
    attempts: int
    error: str
    prepared: Any
    events: Sequence[ReservedEvent]


@dataclass(frozen=True)
class Reconciled:
    """What `reconcile` answers: `Reconciled.applied(result)`, `.failed()` or `.unknown()`."""

    answer: Literal["applied", "failed", "unknown"]
    value: Any = None
    reason: str = ""

    @classmethod
    def applied(cls, value: Any = None) -> Reconciled:
        return cls("applied", value)

    @classmethod
    def failed(cls, reason: str = "") -> Reconciled:
        return cls("failed", reason=reason)

    @classmethod
    def unknown(cls, reason: str = "") -> Reconciled:
        return cls("unknown", reason=reason)


# -- handlers ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Producer:
    workflow: Workflow
    name: str
    fn: Callable[..., Any]
    schedule: Schedule

    @property
    def kind(self) -> str:
        return "producer"


@dataclass(frozen=True)
class Consumer:
    workflow: Workflow
    name: str
    cls: type
    topic: str
    batch: int
    debounce_seconds: float
    definite_failures: tuple[type[BaseException], ...] = ()
    mutate_timeout_seconds: float | None = None

    @property
    def kind(self) -> str:
        return "consumer"

    @property
    def has_reconcile(self) -> bool:
        return callable(getattr(self.cls, "reconcile", None))

    def instance(self) -> Any:
        """A fresh handler object per run: no memory shared between runs."""
        return self.cls()


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


@dataclass
class Workflow:
    """Producers and consumers of one app connected by topics.

    Args:
        name: the workflow's id in its namespace.
        queue: the queue its sessions run on (default "workflows").
        iteration_budget: consumer runs per session before it stops and a new one follows.
        cost_budget_usd: stop a session once its handlers recorded this much cost.
    """

    app: App
    name: str
    queue: str = "workflows"
    iteration_budget: int = 20
    cost_budget_usd: float | None = None
    producers: dict[str, Producer] = field(default_factory=dict)
    consumers: dict[str, Consumer] = field(default_factory=dict)

    @property
    def handlers(self) -> dict[str, Producer | Consumer]:
        return {**self.producers, **self.consumers}

    @property
    def topics(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(c.topic for c in self.consumers.values()))

    def _name(self, name: str) -> str:
        if not HANDLER_NAME.fullmatch(name):
            raise _error(f"handler name {name!r} must match {HANDLER_NAME.pattern}")
        if name in self.handlers:
            raise _error(f"workflow {self.name!r} already has a handler named {name!r}")
        return name

    def producer(
        self, *, schedule: Schedule, name: str | None = None
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register `fn(ctx, state) -> conveyor.Produce` (async or sync) fired by `schedule`."""
        if not isinstance(schedule, Schedule):
            raise _error("producer(schedule=...) takes conveyor.every/cron/once(...)")

        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            handler = self._name(name or fn.__name__)
            if len(inspect.signature(fn).parameters) != 2:
                raise _error(f"producer {handler} must take (ctx, state)")
            self.producers[handler] = Producer(self, handler, fn, schedule)
            fn.__conveyor_handler__ = self.producers[handler]  # type: ignore[attr-defined]
            return fn

        return register

    def consumer(
        self,
        *,
        topic: str,
        batch: int = 10,
        name: str | None = None,
        debounce: DurationLike = 1.0,
        definite_failures: Sequence[type[BaseException]] = (),
        mutate_timeout: DurationLike | None = None,
    ) -> Callable[[type], type]:
        """Register a class with prepare/mutate/next (and optionally reconcile) consuming
        `topic`, at most `batch` events per run, fired `debounce` after events wait.

        `definite_failures`: exception types from `mutate` that mean the side effect did
        not happen (besides conveyor.MutationFailed); any other exception, and a
        `mutate_timeout`, leave the mutation indeterminate.
        """
        if not TOPIC_NAME.fullmatch(topic):
            raise _error(f"topic {topic!r} must match {TOPIC_NAME.pattern}")
        if not isinstance(batch, int) or not 1 <= batch <= 1000:
            raise _error(f"consumer batch must be 1..1000, got {batch!r}")
        wait = seconds_of(debounce, "debounce")
        timeout = None if mutate_timeout is None else seconds_of(mutate_timeout, "mutate_timeout")

        def register(cls: type) -> type:
            handler = self._name(name or _snake(cls.__name__))
            missing = [
                m for m in ("prepare", "mutate", "next") if not callable(getattr(cls, m, None))
            ]
            if missing:
                raise _error(f"consumer {handler} lacks {', '.join(missing)}")
            self.consumers[handler] = Consumer(
                self, handler, cls, topic, batch, wait, tuple(definite_failures), timeout
            )
            cls.__conveyor_handler__ = self.consumers[handler]  # type: ignore[attr-defined]
            return cls

        return register

    def validate(self) -> None:
        if not self.handlers:
            raise _error(f"workflow {self.name!r} defines no producer or consumer")
