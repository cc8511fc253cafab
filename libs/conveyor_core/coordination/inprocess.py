"""In-process coordination: the embedded single-process default.

Everything lives in this process's memory, built on asyncio primitives and a
monotonic clock, with the same semantics as `RedisCoordination`. It must only
be used when a single process runs the platform (the embedded default), since
nothing is shared with other processes.

`ListenerHub` (local wake-up delivery) is also what `RedisCoordination` uses
to deliver notifications to the listeners of its own process.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

from conveyor_core.coordination.base import (
    Lease,
    Listener,
    check_lease_args,
    check_positive,
    check_rate_limit_args,
)

logger = logging.getLogger(__name__)

#: How often (seconds) expired counters and refilled buckets are swept from memory.
_SWEEP_INTERVAL = 60.0


class _LocalListener:
    """A listener fed by a `ListenerHub`; one task waits on it at a time."""

    __slots__ = ("_event", "channels", "consumed", "parked", "pending", "waiter")

    def __init__(self, channels: frozenset[str], waiter: bool) -> None:
        self.channels = channels
        self.waiter = waiter
        self.parked = False  # blocked in wait()
        self.pending: set[str] = set()  # channels notified since the last wait() returned True
        self.consumed: frozenset[str] = frozenset()  # what that last True was for
        self._event = asyncio.Event()

    def wake(self, channels: Iterable[str]) -> None:
        self.pending.update(channels)
        self._event.set()

    # The Listener protocol fixes the `timeout` parameter (a bounded wait is its point).
    async def wait(self, timeout: float) -> bool:  # noqa: ASYNC109
        if not self._event.is_set():
            if timeout <= 0:
                return False
            self.parked = True
            try:
                async with asyncio.timeout(timeout):
                    await self._event.wait()
            except TimeoutError:
                return False
            finally:
                self.parked = False
        # A notify landing after this clear is kept for the next wait().
        self._event.clear()
        self.consumed, self.pending = frozenset(self.pending), set()
        return True


def _channel_set(channels: Iterable[str]) -> frozenset[str]:
    if isinstance(channels, str):
        raise TypeError("listen() takes a sequence of channel names, not a single string")
    channel_set = frozenset(channels)
    if not channel_set:
        raise ValueError("listen() needs at least one channel")
    return channel_set


class ListenerHub:
    """Registry of this process's listeners, by channel.

    Watchers (the default) see every notify. Waiters (`listen(..., waiter=True)`)
    take turns: a notify that names a number of waiters wakes at most that many
    of a channel's waiters without a wake-up pending, parked ones first, so one
    submitted order costs one long-poll one re-check, not every parked one. A
    turn is never lost: a waiter that leaves with a wake-up it did not consume,
    or leaves on an exception after consuming one (its re-check may not have
    run), hands it to another waiter of the channel.
    """

    def __init__(self) -> None:
        # dicts, not sets: waiters are offered wake-ups in the order they registered.
        self._by_channel: dict[str, dict[_LocalListener, None]] = {}

    def deliver(self, channel: str, waiters: int | None = None) -> None:
        """Wake the listeners of `channel`: all of them, or every watcher and `waiters` waiters."""
        listeners = self._by_channel.get(channel)
        if not listeners:
            return
        if waiters is None:
            for listener in listeners:
                listener.wake((channel,))
            return
        for listener in listeners:
            if not listener.waiter:
                listener.wake((channel,))
        self._wake_waiters(channel, waiters)

    def _wake_waiters(self, channel: str, count: int) -> None:
        listeners = self._by_channel.get(channel, {})
        idle = [w for w in listeners if w.waiter and not w.pending]
        # Parked ones first: the others are between a check and a park and re-check anyway.
        for listener in sorted(idle, key=lambda w: not w.parked)[: max(count, 0)]:
            listener.wake((channel,))

    def wake_all(self) -> None:
        """Wake every listener: used when notifications may have been missed."""
        for channel, listeners in self._by_channel.items():
            for listener in listeners:
                listener.wake((channel,))

    def parked(self, channel: str) -> int:
        """Waiters of `channel` blocked in wait() with no wake-up pending (diagnostics, tests)."""
        return sum(
            1 for w in self._by_channel.get(channel, {}) if w.waiter and w.parked and not w.pending
        )

    def listen(
        self, channels: Sequence[str], *, waiter: bool = False
    ) -> AbstractAsyncContextManager[Listener]:
        # A class, not @asynccontextmanager: every long-poll enters one.
        return _Registration(self, _LocalListener(_channel_set(channels), waiter))

    def _register(self, listener: _LocalListener) -> None:
        for channel in listener.channels:
            self._by_channel.setdefault(channel, {})[listener] = None

    def _unregister(self, listener: _LocalListener, failed: bool) -> None:
        for channel in listener.channels:
            registered = self._by_channel.get(channel)
            if registered is not None:
                registered.pop(listener, None)
                if not registered:
                    del self._by_channel[channel]
        if listener.waiter:
            handed = listener.pending | (listener.consumed if failed else frozenset())
            for channel in handed:
                self._wake_waiters(channel, 1)


class _Registration:
    """`ListenerHub.listen`'s context: registered on entry; on exit, a waiter's turn handed on."""

    __slots__ = ("_hub", "_listener")

    def __init__(self, hub: ListenerHub, listener: _LocalListener) -> None:
        self._hub = hub
        self._listener = listener

    async def __aenter__(self) -> Listener:
        self._hub._register(self._listener)
        return self._listener

    async def __aexit__(self, kind: type[BaseException] | None, *_: object) -> None:
        self._hub._unregister(self._listener, failed=kind is not None)


def fencing_token_floor() -> int:
    """A lower bound for new fencing tokens: wall-clock epoch milliseconds.

    Tokens are max(previous + 1, this floor), so they keep increasing across a
    restart of the process (in-process state) or a loss of Redis data, as long
    as the wall clock does not step back further than the gap between
    acquisitions.
    """
    return time.time_ns() // 1_000_000


@dataclass
class _HeldLease:
    holder: str
    token: int
    deadline: float


@dataclass
class _Counter:
    value: int
    deadline: float | None

    def expired(self, now: float) -> bool:
        return self.deadline is not None and self.deadline <= now


@dataclass
class _Value:
    value: str
    deadline: float | None

    def expired(self, now: float) -> bool:
        return self.deadline is not None and self.deadline <= now


@dataclass
class _Bucket:
    tokens: float
    updated: float
    burst: int
    rate: float

    def full_at(self) -> float:
        return self.updated + (self.burst - self.tokens) / self.rate


class HubListening:
    """`listen()` and `parked()` of a coordination backend whose wake-ups reach this
    process's listeners through a `ListenerHub` (both backends: Redis delivers what
    it receives into one)."""

    _listeners: ListenerHub

    def listen(
        self, channels: Sequence[str], *, waiter: bool = False
    ) -> AbstractAsyncContextManager[Listener]:
        return self._listeners.listen(channels, waiter=waiter)

    def parked(self, channel: str) -> int:
        """Waiters of `channel` parked with no wake-up pending (see `ListenerHub.parked`)."""
        return self._listeners.parked(channel)


class InProcessCoordination(HubListening):
    """`Coordination` for a single process, in memory.

    Args:
        monotonic: Clock for lease, counter and bucket expiry (seconds); tests
            may inject a manual one. Fencing tokens use `fencing_token_floor`.
    """

    def __init__(self, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._listeners = ListenerHub()
        self._leases: dict[str, _HeldLease] = {}
        self._last_tokens: dict[str, int] = {}
        self._counters: dict[str, _Counter] = {}
        self._buckets: dict[str, _Bucket] = {}
        self._values: dict[str, _Value] = {}
        self._last_sweep = monotonic()

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def ping(self) -> None:
        return None

    # -- wake-ups ---------------------------------------------------------

    async def notify(self, channel: str, waiters: int | None = None) -> None:
        self._listeners.deliver(channel, waiters)

    # -- leases -----------------------------------------------------------

    async def lease_acquire(self, name: str, holder: str, ttl: float) -> Lease | None:
        check_lease_args(name, holder, ttl)
        now = self._monotonic()
        held = self._leases.get(name)
        if held is not None and held.deadline > now and held.holder != holder:
            return None
        token = max(self._last_tokens.get(name, 0) + 1, fencing_token_floor())
        self._last_tokens[name] = token
        self._leases[name] = _HeldLease(holder, token, now + ttl)
        return Lease(name=name, holder=holder, token=token, ttl=ttl)

    async def lease_renew(self, lease: Lease) -> bool:
        check_positive("lease ttl", lease.ttl)
        now = self._monotonic()
        held = self._held_by(lease)
        if held is None or held.deadline <= now:
            return False
        held.deadline = now + lease.ttl
        return True

    async def lease_release(self, lease: Lease) -> None:
        if self._held_by(lease) is not None:
            del self._leases[lease.name]

    def _held_by(self, lease: Lease) -> _HeldLease | None:
        held = self._leases.get(lease.name)
        if held is None or held.holder != lease.holder or held.token != lease.token:
            return None
        return held

    # -- counters ---------------------------------------------------------

    async def counter_add(self, name: str, amount: int = 1, ttl: float | None = None) -> int:
        if ttl is not None:
            check_positive("counter ttl", ttl)
        now = self._monotonic()
        self._maybe_sweep(now)
        counter = self._live_counter(name, now)
        if counter is None:
            counter = self._counters[name] = _Counter(0, None)
        counter.value += amount
        if ttl is not None and counter.deadline is None:
            counter.deadline = now + ttl
        return counter.value

    async def counters_get(self, names: Sequence[str]) -> list[int]:
        now = self._monotonic()
        values = []
        for name in names:
            counter = self._live_counter(name, now)
            values.append(0 if counter is None else counter.value)
        return values

    def _live_counter(self, name: str, now: float) -> _Counter | None:
        counter = self._counters.get(name)
        if counter is not None and counter.expired(now):
            del self._counters[name]
            return None
        return counter

    # -- compare-and-set values -----------------------------------------------

    async def value_get(self, name: str) -> str | None:
        held = self._live_value(name, self._monotonic())
        return None if held is None else held.value

    async def value_compare_and_set(
        self, name: str, expected: str | None, value: str, ttl: float | None = None
    ) -> bool:
        if ttl is not None:
            check_positive("value ttl", ttl)
        now = self._monotonic()
        self._maybe_sweep(now)
        held = self._live_value(name, now)
        current = None if held is None else held.value
        if current != expected:
            return False
        self._values[name] = _Value(value, None if ttl is None else now + ttl)
        return True

    def _live_value(self, name: str, now: float) -> _Value | None:
        held = self._values.get(name)
        if held is not None and held.expired(now):
            del self._values[name]
            return None
        return held

    # -- rate limits ------------------------------------------------------

    async def rate_limit_take(self, key: str, requested: int, rate: float, burst: int) -> int:
        check_rate_limit_args(requested, rate, burst)
        now = self._monotonic()
        self._maybe_sweep(now)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(burst), now, burst, rate)
        else:
            elapsed = max(0.0, now - bucket.updated)
            bucket.tokens = min(float(burst), bucket.tokens + elapsed * rate)
            bucket.updated, bucket.burst, bucket.rate = now, burst, rate
        # The epsilon keeps float error (2.9999999) from withholding a whole token.
        taken = min(requested, math.floor(bucket.tokens + 1e-9))
        bucket.tokens = max(0.0, bucket.tokens - taken)
        return taken

    def _maybe_sweep(self, now: float) -> None:
        """Forget expired counters and buckets that have refilled (as Redis expiry would)."""
        if now - self._last_sweep < _SWEEP_INTERVAL:
            return
        self._last_sweep = now
        for name in [n for n, c in self._counters.items() if c.expired(now)]:
            del self._counters[name]
        for key in [k for k, b in self._buckets.items() if b.full_at() <= now]:
            del self._buckets[key]
        for name in [n for n, lease in self._leases.items() if lease.deadline <= now]:
            del self._leases[name]
        for name in [n for n, held in self._values.items() if held.expired(now)]:
            del self._values[name]
