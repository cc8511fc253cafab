"""Calling users' handler code and checking what it returns (pure except the call itself).

Everything a phase hands to the next is JSON and within its size limit; a
value that is not is a clear, non-retryable handler_logic error naming the
handler, the size, the limit and the setting.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import json
from collections.abc import Callable
from typing import Any

from conveyor_executor.domain.failure import ClassifiedError, ErrorType
from conveyor_executor.domain.workflow import Emit
from conveyor_executor.settings import ExecutorSettings
from conveyor_sdk import KEEP_STATE, Event, Produce
from conveyor_sdk._wire import NotJson, to_json_value

_SETTING = "CONVEYOR_EXECUTOR_"


class HandlerError(Exception):
    """A handler's code failed or returned something unusable; carries the classification."""

    def __init__(self, error: ClassifiedError) -> None:
        super().__init__(error.message)
        self.error = error


async def call(fn: Callable[..., Any], *args: Any) -> Any:
    """Await an async handler method, or run a sync one in a thread (the loop stays free)."""
    if inspect.iscoroutinefunction(fn):
        return await fn(*args)
    bound = functools.partial(contextvars.copy_context().run, fn, *args)
    result = await asyncio.get_running_loop().run_in_executor(None, bound)
    if inspect.isawaitable(result):  # a sync def returning a coroutine
        return await result
    return result


def _logic(message: str, retryable: bool = False) -> HandlerError:
    return HandlerError(ClassifiedError(ErrorType.HANDLER_LOGIC, message[:1000], retryable, {}))


def json_of(value: Any, what: str, limit: int, setting: str) -> tuple[Any, int]:
    """(the JSON-ready value, its encoded size); HandlerError when not JSON or too large."""
    try:
        plain = to_json_value(value, what)
        size = len(json.dumps(plain, separators=(",", ":"), allow_nan=False).encode())
    except (NotJson, ValueError, TypeError) as exc:
        raise _logic(f"{what} is not JSON: {exc}") from exc
    if size > limit:
        raise _logic(
            f"{what} is {size} bytes, above the limit of {limit} bytes ({_SETTING}{setting})"
        )
    return plain, size


def emit_of(result: Any, handler: str, settings: ExecutorSettings, known_topics: set[str]) -> Emit:
    """Check a producer's (or `next`'s) return value and make it the EMITTING checkpoint."""
    if result is None:
        return Emit(True, None, ())
    if not isinstance(result, Produce):
        raise _logic(
            f"handler {handler} returned {type(result).__name__}, not conveyor.Produce"
            "(state=..., events=[...])"
        )
    keep = result.state is KEEP_STATE
    state = None
    if not keep:
        state, _ = json_of(
            result.state,
            f"the state returned by {handler}",
            settings.max_state_bytes,
            "MAX_STATE_BYTES",
        )
    events: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for index, event in enumerate(result.events):
        where = f"event {index} returned by {handler}"
        if not isinstance(event, Event):
            raise _logic(f"{where} is {type(event).__name__}, not conveyor.Event")
        if not event.message_id or not event.title:
            raise _logic(f"{where} needs a message_id and a title")
        if known_topics and event.topic not in known_topics:
            raise _logic(
                f"{where} names topic {event.topic!r}, which no consumer of the workflow "
                f"reads (topics: {', '.join(sorted(known_topics))})"
            )
        if (event.topic, event.message_id) in seen:
            continue  # the same message twice in one return: one event
        seen.add((event.topic, event.message_id))
        payload, _ = json_of(
            event.payload, f"the payload of {where}", settings.max_event_bytes, "MAX_EVENT_BYTES"
        )
        events.append(
            {
                "topic": event.topic,
                "message_id": str(event.message_id),
                "title": str(event.title),
                "payload": json.dumps(payload, separators=(",", ":")),
            }
        )
    return Emit(keep, state, tuple(events))


def user_error(exc: BaseException, where: str, non_retryable: tuple[type, ...]) -> HandlerError:
    """A handler's exception, classified: retryable unless NonRetryable (or declared so)."""
    from conveyor_sdk import NonRetryable

    retryable = not isinstance(exc, (NonRetryable, *non_retryable))
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    error = ClassifiedError(
        ErrorType.HANDLER_LOGIC,
        f"{where} raised {text}"[:1000],
        retryable,
        {"exception": f"{type(exc).__module__}.{type(exc).__qualname__}"[:256]},
    )
    return HandlerError(error)
