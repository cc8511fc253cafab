"""The coordination contract shared by every replica of every service.

Coordination carries what replicas must agree on but the database should not
be hammered for: wake-up notifications ("a work order was submitted to queue
q"), a leader lease with fencing tokens, shared counters and token-bucket
rate limits. PostgreSQL stays the source of truth; nothing here is durable
beyond what the backend keeps.

Two implementations satisfy `Coordination`:

* `RedisCoordination` for deployments with several replicas;
* `InProcessCoordination` for the embedded single-process default.

Besides wake-ups, leases, counters and rate limits there are small
compare-and-set values, for shared state machines (circuit breakers).

Both pass the same conformance suite (tests/integration/test_coordination.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from conveyor_core.errors import Unavailable


class CoordinationUnavailable(Unavailable):
    """The coordination backend is unreachable; retry with backoff."""

    reason = "COORDINATION_UNAVAILABLE"


@dataclass(frozen=True)
class Lease:
    """Proof of holding a named lease at the time it was acquired.

    Attributes:
        name: The lease name (for example "scheduler-leader").
        holder: Who acquired it; unique per replica process.
        token: Fencing token, strictly increasing per lease name across all
            acquisitions ever. Writes guarded by a lease carry the token, and a
            store rejects a token lower than the highest it has seen, so a
            paused former holder cannot overwrite its successor's work.
        ttl: Seconds the lease lives without renewal.
    """

    name: str
    holder: str
    token: int
    ttl: float


@runtime_checkable
class Listener(Protocol):
    """Wake-ups for a set of channels, registered while its context is open."""

    async def wait(self, timeout: float) -> bool:  # noqa: ASYNC109 (part of the contract)
        """Wait for a notification on any of the listener's channels.

        Returns True as soon as any of the channels was notified since this
        listener was created or since the previous wait() returned True; False
        on timeout. Registration happens when the listener is created (entering
        the context), so a notify that lands between "check the database" and
        "wait" is never lost. A wake-up may be spurious (after a reconnect, for
        example): callers always re-check the database. One task waits on a
        listener at a time.
        """
        ...


@runtime_checkable
class Coordination(Protocol):
    """Wake-ups, leases, counters and rate limits shared by all replicas."""

    async def start(self) -> None:
        """Connect and start background work; idempotent."""
        ...

    async def stop(self) -> None:
        """Stop background work and close connections; idempotent, safe before start()."""
        ...

    async def ping(self) -> None:
        """Raise `CoordinationUnavailable` if the backend is unreachable (readiness)."""
        ...

    async def notify(self, channel: str, waiters: int | None = None) -> None:
        """Wake the listeners on `channel`, in this process and in every replica.

        `waiters` None wakes every listener. A number wakes every watcher but
        only that many waiters (listeners made with `waiter=True`) per process:
        those without a wake-up pending, parked ones first. Use it when that
        many waiters can take what changed (n orders submitted: n long-polls),
        so the others stay parked instead of all re-checking. May return
        before other replicas are told (the publish is sent in the background).
        """
        ...

    def listen(
        self, channels: Sequence[str], *, waiter: bool = False
    ) -> AbstractAsyncContextManager[Listener]:
        """A listener for `channels`, registered on entering the context.

        `waiter`: one of several listeners that take turns (see `notify`). A
        waiter that leaves holding a wake-up it did not act on passes it to
        another waiter of the channel, so a turn is never lost. Watchers (the
        default) see every notify; caches that must drop an answer on any
        change are watchers.
        """
        ...

    async def lease_acquire(self, name: str, holder: str, ttl: float) -> Lease | None:
        """Acquire lease `name` for `ttl` seconds; None if someone else holds it.

        A holder that already holds the lease gets a fresh lease with a new,
        higher token; its previous `Lease` stops being valid.
        """
        ...

    async def lease_renew(self, lease: Lease) -> bool:
        """Extend the lease by `lease.ttl`; False if it was lost (expired and/or taken)."""
        ...

    async def lease_release(self, lease: Lease) -> None:
        """Release the lease if still held by this lease (same holder and token)."""
        ...

    async def counter_add(self, name: str, amount: int = 1, ttl: float | None = None) -> int:
        """Add `amount` to counter `name` and return its new value.

        `ttl` (seconds) sets the counter's expiry when it has none, so the first
        add of a window starts a `ttl`-long life: counters keyed by time bucket
        ("dispatched:q:<minute>") clean themselves up.
        """
        ...

    async def counters_get(self, names: Sequence[str]) -> list[int]:
        """Current values of `names`, in order; a missing or expired counter is 0."""
        ...

    async def value_get(self, name: str) -> str | None:
        """The current value of key `name`, or None when it is missing or expired."""
        ...

    async def value_compare_and_set(
        self, name: str, expected: str | None, value: str, ttl: float | None = None
    ) -> bool:
        """Set key `name` to `value` only if it currently holds `expected`.

        `expected` None means "only if missing (or expired)". `ttl` (seconds)
        gives the new value a life of `ttl` from now; None keeps it forever.
        Returns whether the value was set. Replicas use it for small shared
        state machines (read, compute, compare-and-set, re-read on conflict),
        such as the executor's circuit breakers.
        """
        ...

    async def rate_limit_take(self, key: str, requested: int, rate: float, burst: int) -> int:
        """Take up to `requested` tokens from the bucket `key`; return how many were taken.

        The bucket refills at `rate` tokens per second up to `burst`, and a new
        bucket starts full. Takes min(requested, available whole tokens), so the
        result is between 0 and `requested`.
        """
        ...


def check_lease_args(name: str, holder: str, ttl: float) -> None:
    """Reject arguments every implementation would mishandle, with a clear message."""
    if not name:
        raise ValueError("lease name must not be empty")
    if not holder:
        raise ValueError("lease holder must not be empty")
    check_positive("lease ttl", ttl)


def check_rate_limit_args(requested: int, rate: float, burst: int) -> None:
    if requested < 0:
        raise ValueError(f"requested must be >= 0, got {requested}")
    check_positive("rate", rate)
    if burst < 1:
        raise ValueError(f"burst must be >= 1, got {burst}")


def check_positive(what: str, value: float) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{what} must be a positive finite number, got {value!r}")


def ttl_millis(seconds: float) -> int:
    """Seconds as whole milliseconds for Redis PX/PEXPIRE, never 0 (which Redis rejects)."""
    return max(1, math.ceil(seconds * 1000))
