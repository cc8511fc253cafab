"""Stopping background tasks reliably."""

from __future__ import annotations

import asyncio
from typing import Any

#: How long one cancellation is given before it is sent again.
RECANCEL_SECONDS = 0.2


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel `task` and return once it has ended; re-raise what it raised, other than
    its cancellation (like `task.cancel()` then awaiting it under suppress(CancelledError)).

    The cancellation is sent again while the task runs on: on Python 3.11,
    `asyncio.wait_for` can swallow a cancellation that arrives just as its inner
    awaitable finishes (fixed in 3.12), so a loop built on it may keep running
    and a plain `await task` would wait forever (a stop that never returns).
    """
    if task is None:
        return
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=RECANCEL_SECONDS)
    if not task.cancelled() and task.exception() is not None:
        raise task.exception()  # type: ignore[misc]
