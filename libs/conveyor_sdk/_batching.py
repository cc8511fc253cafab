"""Group commit: calls made while a batch is being written go out together in the next one.

A `Coalescer` turns many concurrent `submit(item)` calls into few `flush(items)` calls:
the first submit of an idle coalescer schedules a flush for the next turn of the event
loop (so everything submitted in this turn joins it); submits made while a flush runs
wait for it to end and go out together in the next. One flush runs at a time, with at
most `max_items` items. A caller's `submit` returns when *its* batch is done, with its
own result or exception: a batch write is as durable for each item as a single write.
A batch is written in the context (trace span, correlation id) of its first caller, so a
lone item's call joins its own trace, as the single call did.

No timer: a lone item goes out at once (one loop turn), so batching costs no latency at
low load and amortises the per-call cost (a transaction, a commit, a gRPC round trip)
over everything that piles up behind a call at high load.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)
I = TypeVar("I")  # noqa: E741 - the item type
R = TypeVar("R")

#: Writes a batch: one result (or exception) per item, in order.
Flush = Callable[[Sequence[I]], Coroutine[Any, Any, Sequence[R | BaseException]]]


class Coalescer(Generic[I, R]):
    def __init__(self, flush: Flush[I, R], max_items: int, name: str) -> None:
        self._flush = flush
        self._max = max_items
        self._name = name
        self._pending: list[tuple[I, asyncio.Future[R], contextvars.Context]] = []
        self._task: asyncio.Task[None] | None = None

    async def submit(self, item: I) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future, contextvars.copy_context()))
        if self._task is None:
            self._task = asyncio.create_task(self._drain(), name=f"coalesce:{self._name}")
        return await future

    async def _drain(self) -> None:
        batch: list[tuple[I, asyncio.Future[R], contextvars.Context]] = []
        try:
            await asyncio.sleep(0)  # the rest of this loop turn's submits join the batch
            while self._pending:
                batch, self._pending = self._pending[: self._max], self._pending[self._max :]
                try:
                    flush = self._flush([item for item, _, _ in batch])
                    results: Sequence[R | BaseException] = await asyncio.create_task(
                        flush, context=batch[0][2]
                    )
                except Exception as exc:
                    results = [exc] * len(batch)
                if len(results) != len(batch):  # pragma: no cover - a flush's contract
                    error = RuntimeError(f"{self._name}: {len(results)} results for {len(batch)}")
                    results = [error] * len(batch)
                for (_, future, _), result in zip(batch, results, strict=True):
                    if future.done():  # its caller was cancelled
                        continue
                    if isinstance(result, BaseException):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
                batch = []
        finally:
            self._task = None
            # Cancelled (the loop is closing): nobody may wait forever for a lost batch.
            for _, future, _ in (*batch, *self._pending):
                if not future.done():
                    future.cancel()
            self._pending = []
