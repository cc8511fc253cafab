"""The one backoff (conveyor_core.retry) and its three users: the queue's retry of an
order, the executor's retry within an attempt, the outbox relays' delivery retries."""

from __future__ import annotations

import math
import random
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from conveyor_core.outbox import Backoff
from conveyor_core.retry import RetryBackoff, backoff_seconds
from conveyor_executor.runners.retry import RetryParams
from conveyor_queue.domain.model import (
    Failure,
    Payload,
    RetryPolicy,
    TimeoutKind,
    WorkOrder,
    WorkOrderSpec,
    WorkOrderState,
)
from conveyor_queue.domain.retry import RetryPlan, backoff_delay, lease_expiry_plan

NOW = datetime(2030, 1, 1, tzinfo=UTC)


def no_jitter(low: float, high: float) -> float:
    return 0.0


def test_backoff_grows_by_the_coefficient_and_stops_at_the_maximum() -> None:
    backoff = RetryBackoff(initial=1.0, coefficient=3.0, maximum=20.0, jitter=0.0)
    assert [backoff.delay(n) for n in range(1, 6)] == [1.0, 3.0, 9.0, 20.0, 20.0]


@pytest.mark.parametrize(
    ("coefficient", "jitter"),
    [(math.nan, 0.2), (math.inf, 0.2), (1e308, 0.2), (2.0, math.nan), (2.0, 7.0)],
)
def test_numbers_with_no_answer_give_the_maximum_and_never_raise(
    coefficient: float, jitter: float
) -> None:
    delay = backoff_seconds(
        5000, initial=1.0, coefficient=coefficient, maximum=30.0, jitter=jitter, uniform=no_jitter
    )
    assert delay == 30.0


def test_jitter_spreads_within_its_fraction_and_never_below_zero() -> None:
    rng = random.Random(3)
    delays = [
        RetryBackoff(initial=10.0, coefficient=2.0, maximum=60.0, jitter=1.0).delay(1, rng.uniform)
        for _ in range(500)
    ]
    assert min(delays) >= 0.0 and max(delays) <= 20.0 and max(delays) - min(delays) > 15


def test_the_queue_the_executor_and_the_outbox_compute_the_same_delays() -> None:
    """Same four numbers, same delays: there is one formula."""
    queue_policy = RetryPolicy(timedelta(seconds=0.5), 2.0, timedelta(seconds=6), jitter=0.25)
    executor = RetryParams(0.5, 2.0, 6.0, 0.25, 10, frozenset())
    outbox = Backoff(initial=0.5, maximum=6.0, multiplier=2.0, jitter=0.25, rng=random.Random(9))
    expected_rng = random.Random(9)
    for failures in range(1, 8):
        expected = RetryBackoff(0.5, 2.0, 6.0, 0.25).delay(failures, expected_rng.uniform)
        assert outbox.next_delay() == expected
        seeded = random.Random(failures)
        assert executor.delay(failures, random.Random(failures).uniform) == pytest.approx(
            backoff_delay(queue_policy, failures, seeded).total_seconds()
        )


def _order(attempt: int, *, cancel_requested: bool = False) -> WorkOrder:
    policy = RetryPolicy(timedelta(seconds=2), 2.0, timedelta(seconds=60), 0.0, 3)
    return WorkOrder(
        id=uuid.uuid4(),
        namespace="ns",
        queue="q",
        spec=WorkOrderSpec(payload=Payload(b""), retry_policy=policy),
        state=WorkOrderState.LEASED,
        attempt=attempt,
        created_at=NOW,
        updated_at=NOW,
        available_at=NOW,
        cancel_requested=cancel_requested,
    )


def test_a_retry_plan_decides_from_the_order_alone() -> None:
    plan = RetryPlan(Failure("network", "down"), NOW)
    retry = plan.outcome(_order(2))
    assert retry.state is WorkOrderState.QUEUED and retry.available_at == NOW + timedelta(seconds=4)
    assert plan.outcome(_order(3)).state is WorkOrderState.DEAD
    assert plan.outcome(_order(1, cancel_requested=True)).state is WorkOrderState.CANCELLED
    asked = RetryPlan(Failure("network"), NOW, retry_delay=timedelta(seconds=30)).outcome(_order(1))
    assert asked.available_at == NOW + timedelta(seconds=30)


def test_a_lease_expiry_plan_names_the_clock_that_ended_the_attempt() -> None:
    plan = lease_expiry_plan(TimeoutKind.HEARTBEAT, NOW)
    outcome = plan.outcome(_order(1))
    assert plan.failure.type == "timeout" and plan.failure.retryable
    assert outcome.state is WorkOrderState.QUEUED
    assert outcome.reason.startswith("heartbeat timeout; retry in 2.000s")
