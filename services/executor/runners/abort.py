"""Racing work against a run's abort event."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


class Aborted(Exception):
    """The run's `cancelled` event was set while waiting."""


async def unless_cancelled(awaitable: Awaitable[T], cancelled: asyncio.Event) -> T:
    """The result of `awaitable`, or `Aborted` as soon as `cancelled` is set.

    The work is cancelled (and awaited) when the event wins, so nothing of it
    keeps running behind the caller's back; if the caller itself is cancelled
    the work is cancelled too.
    """
    if cancelled.is_set():
        if asyncio.iscoroutine(awaitable):
            awaitable.close()
        raise Aborted
    work = asyncio.ensure_future(awaitable)
    waiter = asyncio.ensure_future(cancelled.wait())
    try:
        await asyncio.wait({work, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        if not work.done():
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await work
    if work.cancelled():
        raise Aborted
    return work.result()


async def sleep_unless_cancelled(seconds: float, cancelled: asyncio.Event) -> None:
    """Sleep `seconds`; raise `Aborted` at once if the run is aborted meanwhile."""
    try:
        async with asyncio.timeout(max(0.0, seconds)):
            await cancelled.wait()
    except TimeoutError:
        return
    raise Aborted
