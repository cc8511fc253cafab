"""Circuit breakers per endpoint, shared by every executor replica.

State machine (pure functions `admit` and `settle` below):

* CLOSED: calls pass; `failure_threshold` consecutive unhealthy answers (see
  classify.py: network errors, timeouts, 408, 5xx) open it. A healthy answer
  resets the count.
* OPEN: calls are refused (ErrorType.CIRCUIT_OPEN) until `cool_down` has passed
  since it opened; then the next caller moves it to HALF_OPEN and makes the trial.
* HALF_OPEN: exactly one trial call is let through (across all replicas);
  others are refused. The trial's healthy answer closes the breaker, an
  unhealthy one opens it again. A trial unanswered for `trial_timeout` (its
  caller crashed) lets another caller take the trial.

The state lives in a compare-and-set value of conveyor_core.coordination
(Redis for several replicas, in-process in the embedded default) keyed
`<prefix><namespace> <METHOD> <scheme://host/path>`: the endpoint's URL without
query or fragment, so every job of a namespace calling the same service shares
its view of that service's health, while tenants never trip each other's
breakers. Times come from the injected Clock (wall time, epoch microseconds),
so replicas must have roughly synchronised clocks; a skew only shifts the
cool-down. When the coordination backend is unreachable the breaker lets calls
through (fail open) and logs: losing the breaker must not stop all work.

Every call reads its breaker's state before and after it: with many calls in flight
that was two coordination round trips per call. A process's breakers read through
one `StateReads`, which group-commits them (conveyor_sdk._batching): the reads asked
while one is in flight go out together in the next, one GET per distinct key. Each
caller still gets a value read after it asked, as its own GET would have, so the
state machine (and the compare-and-set that follows a read) is unchanged.
"""

from __future__ import annotations

import enum
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

from conveyor_core.clock import Clock, to_micros
from conveyor_core.coordination import Coordination, CoordinationUnavailable
from conveyor_core.metrics import meter
from conveyor_sdk._batching import Coalescer

logger = logging.getLogger(__name__)
T = TypeVar("T")

_transitions = meter(__name__).create_counter(
    "conveyor.executor.breaker_transitions",
    description="Circuit breaker state changes, by endpoint key and from/to state.",
)

#: Compare-and-set retries before a caller gives up agreeing and lets its call through.
_MAX_CAS_ROUNDS = 16
#: Life of a breaker's shared state after its last change (a quiet endpoint is forgotten).
_STATE_TTL_SECONDS = 7 * 24 * 3600.0


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class BreakerPolicy:
    failure_threshold: int
    cool_down_micros: int
    trial_timeout_micros: int


@dataclass(frozen=True)
class Snapshot:
    """A breaker's shared state. `trial_micros` identifies the current half-open trial."""

    state: BreakerState = BreakerState.CLOSED
    failures: int = 0
    opened_micros: int = 0
    trial_micros: int = 0

    def encode(self) -> str:
        return json.dumps(
            [str(self.state), self.failures, self.opened_micros, self.trial_micros],
            separators=(",", ":"),
        )

    @classmethod
    def decode(cls, raw: str | None) -> Snapshot:
        if raw is None:
            return cls()
        try:
            state, failures, opened, trial = json.loads(raw)
            return cls(BreakerState(state), int(failures), int(opened), int(trial))
        except (ValueError, TypeError):
            logger.warning("breaker: unreadable shared state %r reset to closed", raw)
            return cls()


@dataclass(frozen=True)
class Admission:
    """Whether a call may go; `trial` is its trial id when it is the half-open trial."""

    allowed: bool
    trial: int = 0
    retry_in_seconds: float = 0.0


def admit(snapshot: Snapshot, now: int, policy: BreakerPolicy) -> tuple[Admission, Snapshot]:
    """Admission of a call at `now` (epoch micros) and the state after it."""
    if snapshot.state is BreakerState.CLOSED:
        return Admission(True), snapshot
    if snapshot.state is BreakerState.OPEN:
        reopens = snapshot.opened_micros + policy.cool_down_micros
        if now < reopens:
            return Admission(False, retry_in_seconds=(reopens - now) / 1e6), snapshot
        return Admission(True, trial=now), replace(
            snapshot, state=BreakerState.HALF_OPEN, trial_micros=now
        )
    trial_expires = snapshot.trial_micros + policy.trial_timeout_micros
    if now < trial_expires:
        return Admission(False, retry_in_seconds=(trial_expires - now) / 1e6), snapshot
    return Admission(True, trial=now), replace(snapshot, trial_micros=now)


def settle(
    snapshot: Snapshot, healthy: bool, trial: int, now: int, policy: BreakerPolicy
) -> Snapshot:
    """The state after a call admitted with `trial` (0 if none) answered healthy or not."""
    if snapshot.state is BreakerState.CLOSED:
        if healthy:
            return replace(snapshot, failures=0)
        failures = snapshot.failures + 1
        if failures >= policy.failure_threshold:
            return Snapshot(BreakerState.OPEN, failures, opened_micros=now)
        return replace(snapshot, failures=failures)
    if snapshot.state is BreakerState.HALF_OPEN and trial and trial == snapshot.trial_micros:
        if healthy:
            return Snapshot()
        return Snapshot(BreakerState.OPEN, snapshot.failures, opened_micros=now)
    # OPEN, or another caller's trial: a late answer of an earlier call changes nothing.
    return snapshot


@dataclass(frozen=True)
class Transition:
    key: str
    from_state: BreakerState
    to_state: BreakerState


def breaker_key(namespace: str, method: str, url: str) -> str:
    """`<namespace> <METHOD> <scheme://host/path>` (no query, fragment or credentials)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    bare = urlunsplit((parts.scheme.lower(), host.lower(), parts.path or "/", "", ""))
    return f"{namespace} {method.upper()} {bare}"


class StateReads:
    """Breaker state reads of one process, group-committed over one coordination backend.

    `get(name)` returns the value a `value_get(name)` issued after the call would have:
    the reads asked while a batch is read wait for the next batch, which reads each
    distinct name once (one key per endpoint: a batch of any size is usually one GET).
    """

    def __init__(self, coordination: Coordination, batch_size: int = 256) -> None:
        self.coordination = coordination
        self._reads: Coalescer[str, str | None] = Coalescer(self._read, batch_size, "breaker-reads")

    async def get(self, name: str) -> str | None:
        return await self._reads.submit(name)

    async def _read(self, names: Sequence[str]) -> list[str | BaseException | None]:
        values: dict[str, str | BaseException | None] = {}
        for name in dict.fromkeys(names):
            try:
                values[name] = await self.coordination.value_get(name)
            except Exception as exc:  # each waiting caller gets it, as from its own GET
                values[name] = exc
        return [values[name] for name in names]


class SharedBreaker:
    """One endpoint's breaker over a coordination backend (one per call site is fine).

    `reads`, when given, is the process's shared `StateReads` over the same backend.
    """

    def __init__(
        self,
        coordination: Coordination,
        clock: Clock,
        key: str,
        policy: BreakerPolicy,
        prefix: str,
        reads: StateReads | None = None,
    ) -> None:
        self._coordination = coordination
        self._clock = clock
        self.key = key
        self._name = prefix + key
        self._policy = policy
        self._read = coordination.value_get if reads is None else reads.get

    async def state(self) -> BreakerState:
        return Snapshot.decode(await self._coordination.value_get(self._name)).state

    async def before_call(self) -> tuple[Admission, Transition | None]:
        """Ask to make a call; may move OPEN -> HALF_OPEN (the caller makes the trial)."""
        outcome = await self._update(
            lambda snap, now: admit(snap, now, self._policy),
        )
        if outcome is None:
            return Admission(True), None
        return outcome

    async def after_call(self, admission: Admission, healthy: bool) -> Transition | None:
        """Report the call's answer; returns the transition it caused, if any."""
        outcome = await self._update(
            lambda snap, now: (None, settle(snap, healthy, admission.trial, now, self._policy)),
        )
        return None if outcome is None else outcome[1]

    async def _update(
        self, step: Callable[[Snapshot, int], tuple[T, Snapshot]]
    ) -> tuple[T, Transition | None] | None:
        """Read, compute, compare-and-set until it sticks; (result, transition) or None."""
        try:
            for round_ in range(_MAX_CAS_ROUNDS):
                # A lost compare-and-set reads again on its own: it is contended, not common.
                read = self._read if round_ == 0 else self._coordination.value_get
                raw = await read(self._name)
                before = Snapshot.decode(raw)
                result, after = step(before, to_micros(self._clock.now()))
                if after == before or await self._coordination.value_compare_and_set(
                    self._name, raw, after.encode(), ttl=_STATE_TTL_SECONDS
                ):
                    return result, self._transition(before, after)
        except CoordinationUnavailable as exc:
            logger.warning(
                "breaker %s: coordination unavailable, letting calls through: %s", self.key, exc
            )
            return None
        logger.warning(
            "breaker %s: state kept changing under us; letting the call through", self.key
        )
        return None

    def _transition(self, before: Snapshot, after: Snapshot) -> Transition | None:
        if before.state is after.state:
            return None
        _transitions.add(
            1, {"endpoint": self.key, "from": str(before.state), "to": str(after.state)}
        )
        logger.info("breaker %s: %s -> %s", self.key, before.state, after.state)
        return Transition(self.key, before.state, after.state)
