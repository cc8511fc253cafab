"""What happens to an order after an attempt ends without success."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from conveyor_core.retry import backoff_seconds
from conveyor_queue.domain.model import (
    Failure,
    RetryPolicy,
    TimeoutKind,
    WorkOrder,
    WorkOrderState,
)


def backoff_delay(policy: RetryPolicy, attempt: int, rng: random.Random | None = None) -> timedelta:
    """Delay before the retry that follows attempt number `attempt` (1-based).

    conveyor_core.retry's backoff over the order's policy: initial *
    coefficient^(attempt-1), capped at maximum_interval, then spread uniformly by
    +/- jitter. Never raises, whatever the stored policy holds (see there).
    """
    seconds = backoff_seconds(
        attempt,
        initial=policy.initial_interval.total_seconds(),
        coefficient=policy.backoff_coefficient,
        maximum=policy.maximum_interval.total_seconds(),
        jitter=policy.jitter,
        uniform=(rng or random).uniform,
    )
    try:
        return timedelta(seconds=seconds)
    except OverflowError:  # a cap near timedelta.max, plus jitter
        return timedelta.max


@dataclass(frozen=True, slots=True)
class AttemptOutcome:
    state: WorkOrderState
    available_at: datetime | None
    reason: str


def after_failed_attempt(
    *,
    policy: RetryPolicy,
    attempt: int,
    failure: Failure,
    cancel_requested: bool,
    now: datetime,
    retry_delay: timedelta | None = None,
    rng: random.Random | None = None,
) -> AttemptOutcome:
    """Decide the next state of an order whose attempt `attempt` failed."""
    if cancel_requested:
        return AttemptOutcome(WorkOrderState.CANCELLED, None, "cancelled while running")
    if not failure.retryable or failure.type in policy.non_retryable_error_types:
        return AttemptOutcome(WorkOrderState.FAILED, None, f"non-retryable failure: {failure.type}")
    if attempt >= policy.maximum_attempts:
        return AttemptOutcome(
            WorkOrderState.DEAD, None, f"attempts exhausted ({attempt}/{policy.maximum_attempts})"
        )
    delay = retry_delay if retry_delay is not None else backoff_delay(policy, attempt, rng)
    try:
        available_at = now + delay
    except OverflowError:  # a stored policy's maximum_interval past year 9999
        return AttemptOutcome(
            WorkOrderState.DEAD, None, f"retry delay {delay} ends past the last instant"
        )
    return AttemptOutcome(
        WorkOrderState.QUEUED, available_at, f"retry in {delay.total_seconds():.3f}s"
    )


@dataclass(frozen=True, slots=True)
class RetryPlan:
    """How an attempt that did not succeed ends: decided here, applied by the store.

    The engine (a worker's FailWorkOrder) or the sweeper (an expired lease) builds
    the plan; the store locks the order's row, checks the lease, and applies
    `outcome(order)` to it, in one transaction. `outcome` is pure: the order's own
    policy, attempt number and cancel request decide, as `after_failed_attempt` says.
    """

    failure: Failure
    now: datetime
    #: The worker's requested delay before the retry, instead of the policy's backoff.
    retry_delay: timedelta | None = None
    #: Set when a clock ended the attempt (the reason names it).
    timeout_kind: TimeoutKind | None = None

    def outcome(self, order: WorkOrder, rng: random.Random | None = None) -> AttemptOutcome:
        outcome = after_failed_attempt(
            policy=order.spec.retry_policy,
            attempt=order.attempt,
            failure=self.failure,
            cancel_requested=order.cancel_requested,
            now=self.now,
            retry_delay=self.retry_delay,
            rng=rng,
        )
        if self.timeout_kind is None:
            return outcome
        reason = f"{self.timeout_kind.value.lower()} timeout; {outcome.reason}"
        return AttemptOutcome(outcome.state, outcome.available_at, reason)


def lease_expiry_plan(kind: TimeoutKind, now: datetime) -> RetryPlan:
    """The plan of an attempt whose lease ran out on clock `kind` (the sweeper's)."""
    return RetryPlan(timeout_failure(kind), now, timeout_kind=kind)


def timeout_failure(kind: TimeoutKind) -> Failure:
    return Failure(
        type="timeout",
        message=f"{kind.value.lower()} timeout",
        retryable=True,
        details={"timeout_kind": kind.value},
    )
