"""Retry policy of HTTP calls: effective parameters, backoff with jitter bounds (pure)."""

from __future__ import annotations

import random

import pytest
from google.protobuf import duration_pb2

from conveyor.common.v1 import types_pb2
from conveyor_executor.domain.failure import ClassifiedError, ErrorType
from conveyor_executor.runners.retry import next_delay, retry_params
from conveyor_executor.runners.settings import RunnerSettings


def seconds(value: float) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromNanoseconds(int(value * 1e9))
    return out


SETTINGS = RunnerSettings(
    retry_initial_interval_seconds=1.0,
    retry_backoff_coefficient=2.0,
    retry_maximum_interval_seconds=10.0,
    retry_jitter=0.2,
    retry_maximum_attempts=4,
    retry_after_max_seconds=30.0,
)


def test_defaults_come_from_settings_without_a_policy() -> None:
    params = retry_params(None, SETTINGS)
    assert (params.initial_interval, params.backoff_coefficient) == (1.0, 2.0)
    assert (params.maximum_interval, params.jitter, params.maximum_attempts) == (10.0, 0.2, 4)


def test_policy_fields_override_and_maximum_defaults_to_100x_initial() -> None:
    policy = types_pb2.RetryPolicy(
        initial_interval=seconds(0.5), backoff_coefficient=3, jitter=0.5, maximum_attempts=7
    )
    params = retry_params(policy, SETTINGS)
    assert params.initial_interval == 0.5
    assert params.maximum_interval == 50.0
    assert (params.backoff_coefficient, params.jitter, params.maximum_attempts) == (3, 0.5, 7)


def test_delays_grow_exponentially_up_to_the_maximum_without_jitter() -> None:
    params = retry_params(types_pb2.RetryPolicy(jitter=0), SETTINGS)
    no_jitter = retry_params(
        None, RunnerSettings(retry_jitter=0.0, retry_maximum_interval_seconds=10)
    )
    delays = [no_jitter.delay(n, random.uniform) for n in range(1, 7)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert params.jitter == 0.2  # 0 in the proto means "default", not "none"


@pytest.mark.parametrize("failed_attempts", [1, 2, 3, 5])
def test_jitter_stays_within_bounds_and_actually_spreads(failed_attempts: int) -> None:
    params = retry_params(None, SETTINGS)
    base = min(1.0 * 2 ** (failed_attempts - 1), 10.0)
    rng = random.Random(failed_attempts)
    delays = [params.delay(failed_attempts, rng.uniform) for _ in range(500)]
    assert all(base * 0.8 <= d <= base * 1.2 for d in delays)
    assert max(delays) - min(delays) > base * 0.3  # jitter is really applied
    # The extremes of the random draw hit the bounds exactly.
    assert params.delay(failed_attempts, lambda low, high: low) == pytest.approx(base * 0.8)
    assert params.delay(failed_attempts, lambda low, high: high) == pytest.approx(base * 1.2)


def test_retry_after_replaces_backoff_and_is_capped() -> None:
    params = retry_params(None, SETTINGS)
    assert next_delay(params, 1, 7.0, SETTINGS) == 7.0
    assert next_delay(params, 1, 3600.0, SETTINGS) == 30.0
    assert 0.8 <= next_delay(params, 1, None, SETTINGS) <= 1.2


def test_should_retry_respects_retryability_attempts_and_excluded_types() -> None:
    policy = types_pb2.RetryPolicy(maximum_attempts=3, non_retryable_error_types=["rate_limited"])
    params = retry_params(policy, SETTINGS)
    network = ClassifiedError.of(ErrorType.NETWORK, "down")
    assert params.should_retry(network, 1) and params.should_retry(network, 2)
    assert not params.should_retry(network, 3)
    assert not params.should_retry(ClassifiedError.of(ErrorType.INVALID_INPUT, "400"), 1)
    assert not params.should_retry(ClassifiedError.of(ErrorType.RATE_LIMITED, "429"), 1)


def test_settings_reject_nonsense() -> None:
    with pytest.raises(ValueError, match="retry_jitter"):
        RunnerSettings(retry_jitter=1.5)
    with pytest.raises(ValueError, match="max_parallel"):
        RunnerSettings(max_parallel=0)
    with pytest.raises(ValueError, match="http_call_timeout_seconds"):
        RunnerSettings(http_call_timeout_seconds=0)
