"""What happens to an order after an attempt ends without success."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from conveyor_queue.domain.model import Failure, RetryPolicy, TimeoutKind, WorkOrderState


def backoff_delay(policy: RetryPolicy, attempt: int, rng: random.Random | None = None) -> timedelta:
    """Delay before the retry that follows attempt number `attempt` (1-based).

    initial * coefficient^(attempt-1), capped at maximum_interval, then spread
    uniformly by +/- jitter.

    Never raises, whatever the stored policy holds: a row written before
    validation refused such values (a NaN or infinite coefficient, NaN jitter, a
    coefficient whose powers overflow) gets the longest delay its policy allows,
    maximum_interval, where the arithmetic has no answer.
    """
    cap = max(policy.maximum_interval.total_seconds(), 0.0)
    try:
        base = policy.initial_interval.total_seconds() * policy.backoff_coefficient ** (attempt - 1)
    except (OverflowError, ZeroDivisionError, ValueError):
        base = cap
    if not math.isfinite(base) or base > cap:  # NaN, inf, or past the cap
        base = cap
    jitter = policy.jitter if 0 <= policy.jitter <= 1 else 0.0  # NaN: no jitter
    if jitter:
        spread = base * jitter
        base += (rng or random).uniform(-spread, spread)
    try:
        return timedelta(seconds=max(base, 0.0))
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


def timeout_failure(kind: TimeoutKind) -> Failure:
    return Failure(
        type="timeout",
        message=f"{kind.value.lower()} timeout",
        retryable=True,
        details={"timeout_kind": kind.value},
    )
