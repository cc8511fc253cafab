"""What a long-poll may skip: answers about a queue kept between lease calls, while still true.

A lease that finds nothing parks until a wake-up, or until the next delayed
order (backoff, `not_before`) falls due. A busy leaser parks once per call, and
each park cost two statements: an empty lease, then "when does the next delayed
order fall due". At 200 submits/s that was two statements per lease call whose
answers change only when the coordination backend says so. Two answers are
therefore kept per set of queues (`namespace`, queue names):

* `DueTimes`: when the next delayed order falls due. Every change that makes
  an order wait for a later instant (a submit with `not_before`, a retry after
  backoff, an expired lease, a redrive) notifies the queue's *delayed* channel
  (`delayed_channel`) on every replica; that drops the answer.
* `DrainedQueues`: the last lease statement left no available order behind.
  Any wake-up of the queues' ordinary channels drops that (a submit, a retry, a
  resumed queue, freed capacity), and so does a delayed order falling due.

Each set of queues holds listeners on those channels, open between lease calls
too, so nothing announced while no call listens is missed. An answer is
trusted for at most `ttl` seconds (the poll interval: the long-poll's own
safety net against a lost wake-up), and only the least recently used
`max_entries` sets are kept. After a lost Redis subscription, the coordination
backend wakes every listener, which drops every answer.
"""

from __future__ import annotations

import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from conveyor_core.coordination import Coordination
from conveyor_core.coordination.base import Listener
from conveyor_queue.domain.model import QueueRef

NextAvailable = Callable[[str, Sequence[str], datetime], Coroutine[Any, Any, datetime | None]]
Key = tuple[str, tuple[str, ...]]


def delayed_channel(ref: QueueRef) -> str:
    """Coordination channel notified when an order of `ref` starts waiting for a future instant."""
    return f"{ref.channel}:delayed"


@dataclass
class _Watch:
    """A listener kept open for one set of queues, and what is known while it stays quiet."""

    listener: Listener
    exit: contextlib.AsyncExitStack
    generation: int = 0  # notifications seen so far
    known_at: float = -1.0  # monotonic instant of the answer; < 0: no answer
    due: datetime | None = None

    async def sync(self) -> int:
        """Count a notification that arrived since the last look; drop the answer if so."""
        if await self.listener.wait(0):
            self.generation += 1
            self.known_at = -1.0
        return self.generation

    def fresh(self, ttl: float) -> bool:
        return self.known_at >= 0 and time.monotonic() - self.known_at < ttl


class _Watches:
    """Listeners per set of queues (least recently used dropped first)."""

    def __init__(
        self, coordination: Coordination, channel: Callable[[QueueRef], str], max_entries: int
    ) -> None:
        self._coordination = coordination
        self._channel = channel
        self._max_entries = max_entries
        self._watches: OrderedDict[Key, _Watch] = OrderedDict()

    async def get(self, namespace: str, queues: Sequence[str]) -> _Watch:
        key = (namespace, tuple(queues))
        watch = self._watches.get(key)
        if watch is not None:
            self._watches.move_to_end(key)
            return watch
        stack = contextlib.AsyncExitStack()
        channels = [self._channel(QueueRef(namespace, q)) for q in queues]
        # Registered before any answer is taken, so nothing lands unseen in between.
        listener = await stack.enter_async_context(self._coordination.listen(channels))
        if key in self._watches:  # another lease call made it meanwhile
            await stack.aclose()
            return self._watches[key]
        watch = self._watches[key] = _Watch(listener, stack)
        while len(self._watches) > self._max_entries:
            _, oldest = self._watches.popitem(last=False)
            await oldest.exit.aclose()
        return watch

    async def close(self) -> None:
        watches, self._watches = list(self._watches.values()), OrderedDict()
        for watch in watches:
            await watch.exit.aclose()


class DueTimes:
    """Cached "the next delayed order of these queues falls due at".

    Args:
        lookup: the store's `work_order_next_available`.
        coordination: where the delayed channels are listened to.
        ttl: seconds an answer is trusted at most.
        max_entries: sets of queues kept.
    """

    def __init__(
        self, lookup: NextAvailable, coordination: Coordination, ttl: float, max_entries: int = 1024
    ) -> None:
        self._lookup = lookup
        self._ttl = ttl
        self._watches = _Watches(coordination, delayed_channel, max_entries)

    async def next_due(
        self, namespace: str, queues: Sequence[str], now: datetime
    ) -> datetime | None:
        """The earliest instant after `now` at which a QUEUED order of `queues` is available."""
        watch = await self._watches.get(namespace, queues)
        if not await self.may_be_due(namespace, queues, now):
            return watch.due
        generation, checked_at = watch.generation, time.monotonic()
        due = await self._lookup(namespace, queues, now)
        if await watch.sync() == generation:  # else one appeared meanwhile: maybe missed
            watch.known_at, watch.due = checked_at, due
        return due

    async def may_be_due(self, namespace: str, queues: Sequence[str], now: datetime) -> bool:
        """False only when no delayed order of `queues` can have fallen due by `now`."""
        watch = await self._watches.get(namespace, queues)
        await watch.sync()
        return not watch.fresh(self._ttl) or (watch.due is not None and watch.due <= now)

    async def close(self) -> None:
        await self._watches.close()


class DrainedQueues:
    """Remembers that a lease statement left nothing available in a set of queues."""

    def __init__(self, coordination: Coordination, ttl: float, max_entries: int = 1024) -> None:
        self._ttl = ttl
        self._watches = _Watches(coordination, lambda ref: ref.channel, max_entries)

    async def before_lease(self, namespace: str, queues: Sequence[str]) -> int:
        """Call before a lease statement; pass the result to `after_lease`."""
        return await (await self._watches.get(namespace, queues)).sync()

    async def after_lease(
        self, namespace: str, queues: Sequence[str], mark: int, drained: bool
    ) -> None:
        """Record the statement's outcome; `drained`: it took every available order."""
        watch = await self._watches.get(namespace, queues)
        if drained and await watch.sync() == mark:  # no wake-up since the statement began
            watch.known_at = time.monotonic()
        else:
            watch.known_at = -1.0

    async def drained(self, namespace: str, queues: Sequence[str]) -> bool:
        """True when nothing was announced since a statement found the queues drained."""
        watch = await self._watches.get(namespace, queues)
        await watch.sync()
        return watch.fresh(self._ttl)

    async def close(self) -> None:
        await self._watches.close()
