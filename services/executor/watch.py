"""Live run updates for WatchRun subscribers, with a bounded buffer per subscriber.

A slow watcher never makes the executor hold unbounded memory: each
subscriber buffers at most `capacity` droppable updates (progress, steps);
past that, the oldest droppable update is dropped. State changes (a new
`Run` snapshot) are never dropped; there are only a few per attempt.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from conveyor_executor.domain.model import Progress, Run, RunRef, StepRecord


@dataclass(frozen=True, slots=True)
class RunUpdate:
    """Exactly one of the fields is set."""

    run: Run | None = None
    progress: Progress | None = None
    step: StepRecord | None = None

    @property
    def droppable(self) -> bool:
        return self.run is None


class Subscription:
    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._items: collections.deque[RunUpdate] = collections.deque()
        self._ready = asyncio.Event()
        self.dropped = 0

    def push(self, update: RunUpdate) -> None:
        full = len(self._items) >= self._capacity
        if full and not self._drop_oldest_droppable() and update.droppable:
            self.dropped += 1  # only state changes are buffered: drop this progress
            return
        self._items.append(update)
        self._ready.set()

    def _drop_oldest_droppable(self) -> bool:
        for index, item in enumerate(self._items):
            if item.droppable:
                del self._items[index]
                self.dropped += 1
                return True
        return False

    async def get(self, timeout: float) -> RunUpdate | None:  # noqa: ASYNC109
        """The next update, or None when none came within `timeout` seconds."""
        if not self._items:
            self._ready.clear()
            try:
                await asyncio.wait_for(self._ready.wait(), timeout)
            except TimeoutError:
                return None
        return self._items.popleft()

    def __len__(self) -> int:
        return len(self._items)


class WatchHub:
    """Fans run updates out to the subscribers of each run (this process only)."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._subscribers: dict[RunRef, set[Subscription]] = {}

    @contextmanager
    def subscribe(self, ref: RunRef) -> Iterator[Subscription]:
        subscription = Subscription(self._capacity)
        self._subscribers.setdefault(ref, set()).add(subscription)
        try:
            yield subscription
        finally:
            subscribers = self._subscribers.get(ref)
            if subscribers is not None:
                subscribers.discard(subscription)
                if not subscribers:
                    del self._subscribers[ref]

    def publish(self, ref: RunRef, **update: Any) -> None:
        for subscription in self._subscribers.get(ref, ()):
            subscription.push(RunUpdate(**update))

    def subscriber_count(self, ref: RunRef) -> int:
        return len(self._subscribers.get(ref, ()))
