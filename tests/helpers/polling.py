"""The one polling helper of the suite: wait for a condition, never for a fixed time.

`eventually(probe, what, limit)` calls `probe` (sync or async) until it returns
something truthy and returns that; after `limit` seconds it fails naming `what`.
A probe that hangs is cut off at the limit too. `poll(fetch, done)` is the same
wait for "fetch a value until `done(value)`", failing with the last value seen.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

#: Generous: only a broken test waits this long; a passing one returns at once.
DEFAULT_LIMIT = 45.0


async def eventually(
    probe: Callable[[], Awaitable[T | None] | T | None],
    what: str = "the condition",
    limit: float = DEFAULT_LIMIT,
    *,
    every: float = 0.02,
) -> T:
    """Poll `probe` until it returns something truthy (returned), or fail after `limit` s."""
    try:
        async with asyncio.timeout(limit):
            while True:
                found = probe()
                if inspect.isawaitable(found):
                    found = await found
                if found:
                    return found  # type: ignore[return-value]
                await asyncio.sleep(every)
    except TimeoutError:
        raise AssertionError(f"not seen within {limit}s: {what}") from None


async def poll(
    fetch: Callable[[], Awaitable[Any]],
    done: Callable[[Any], object],
    within: float = 15.0,
    every: float = 0.02,
) -> Any:
    """Call `fetch()` until `done(value)`; fail with the last value after `within` seconds."""
    last: list[Any] = []

    async def probe() -> Any:
        value = await fetch()
        last[:] = [value]
        return (value,) if done(value) else None

    try:
        return (await eventually(probe, "done", within, every=every))[0]
    except AssertionError:
        seen = last[0] if last else "nothing"
        raise AssertionError(f"condition not met within {within}s; last value: {seen}") from None
