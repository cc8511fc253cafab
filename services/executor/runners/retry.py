"""Retry of transient failures within one attempt: the policy and its delays (pure).

The delay before attempt n+1 (n >= 1 failed attempts) is conveyor_core.retry's
backoff: min(initial * coefficient^(n-1), maximum), spread by +/- jitter, as the
conveyor.common.v1.RetryPolicy comment defines. A server's Retry-After, when
given, replaces the computed delay (capped by the settings), since the server
knows better when it will have capacity again.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from conveyor.common.v1 import types_pb2
from conveyor_core.retry import backoff_seconds
from conveyor_executor.domain.failure import ClassifiedError
from conveyor_executor.runners.settings import RunnerSettings


@dataclass(frozen=True)
class RetryParams:
    initial_interval: float
    backoff_coefficient: float
    maximum_interval: float
    jitter: float
    maximum_attempts: int
    non_retryable_types: frozenset[str]

    def delay(self, failed_attempts: int, uniform: Callable[[float, float], float]) -> float:
        """Seconds to wait after `failed_attempts` (>= 1) failures; `uniform` is random.uniform."""
        return backoff_seconds(
            failed_attempts,
            initial=self.initial_interval,
            coefficient=self.backoff_coefficient,
            maximum=self.maximum_interval,
            jitter=self.jitter,
            uniform=uniform,
        )

    def should_retry(self, error: ClassifiedError, attempts_made: int) -> bool:
        """Whether a call that failed with `error` after `attempts_made` attempts is retried."""
        return (
            error.retryable
            and str(error.type) not in self.non_retryable_types
            and attempts_made < self.maximum_attempts
        )


def retry_params(policy: types_pb2.RetryPolicy | None, settings: RunnerSettings) -> RetryParams:
    """The effective policy: the endpoint's fields where set, the settings' defaults elsewhere."""
    policy = policy if policy is not None else types_pb2.RetryPolicy()
    initial = settings.retry_initial_interval_seconds
    if policy.HasField("initial_interval"):
        initial = max(0.0, policy.initial_interval.ToTimedelta().total_seconds()) or initial
    maximum = settings.retry_maximum_interval_seconds
    if policy.HasField("maximum_interval"):
        maximum = policy.maximum_interval.ToTimedelta().total_seconds() or maximum
    elif policy.HasField("initial_interval"):
        maximum = 100 * initial  # the proto's documented default
    coefficient = settings.retry_backoff_coefficient
    if policy.backoff_coefficient >= 1:
        coefficient = policy.backoff_coefficient
    jitter = policy.jitter if 0 < policy.jitter <= 1 else settings.retry_jitter
    attempts = policy.maximum_attempts or settings.retry_maximum_attempts
    return RetryParams(
        initial_interval=initial,
        backoff_coefficient=coefficient,
        maximum_interval=max(maximum, 0.0),
        jitter=jitter,
        maximum_attempts=max(1, attempts),
        non_retryable_types=frozenset(policy.non_retryable_error_types),
    )


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds a Retry-After header asks to wait (delta-seconds or HTTP-date), or None."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(int(text))
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def next_delay(
    params: RetryParams,
    failed_attempts: int,
    retry_after: float | None,
    settings: RunnerSettings,
    uniform: Callable[[float, float], float] = random.uniform,
) -> float:
    """The wait before the next attempt: Retry-After (capped) when given, else backoff."""
    if retry_after is not None:
        return min(retry_after, settings.retry_after_max_seconds)
    return params.delay(failed_attempts, uniform)
