"""Pure queue logic: backoff, the failure decision, flow-control picking, names and settings,
and the row and protobuf conversions of an order."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from conveyor_core.errors import InvalidArgument
from conveyor_core.pagination import PageTokens, page_size
from conveyor_core.protoconv import ts
from conveyor_core.settings import ConfigurationError, CoreSettings, load
from conveyor_queue.api import convert
from conveyor_queue.domain import flow, validation
from conveyor_queue.domain.model import (
    Failure,
    RetryPolicy,
    WorkOrder,
    WorkOrderSpec,
    WorkOrderState,
)
from conveyor_queue.domain.retry import after_failed_attempt, backoff_delay
from conveyor_queue.store.rows import policy_from_json, policy_to_json

NOW = datetime(2030, 1, 1, tzinfo=UTC)


def test_backoff_grows_and_caps() -> None:
    policy = RetryPolicy(timedelta(seconds=1), 2.0, timedelta(seconds=5), jitter=0)
    assert [backoff_delay(policy, n).total_seconds() for n in range(1, 6)] == [1, 2, 4, 5, 5]


def test_jitter_stays_within_its_fraction() -> None:
    policy = RetryPolicy(timedelta(seconds=10), 1.0, timedelta(seconds=10), jitter=0.3)
    rng = random.Random(7)
    delays = [backoff_delay(policy, 1, rng).total_seconds() for _ in range(500)]
    assert min(delays) >= 7 and max(delays) <= 13 and max(delays) - min(delays) > 4


@pytest.mark.parametrize(
    ("failure", "attempt", "cancel", "state"),
    [
        (Failure("network"), 1, False, WorkOrderState.QUEUED),
        (Failure("network"), 3, False, WorkOrderState.DEAD),
        (Failure("network", retryable=False), 1, False, WorkOrderState.FAILED),
        (Failure("invalid_input"), 1, False, WorkOrderState.FAILED),
        (Failure("network"), 1, True, WorkOrderState.CANCELLED),
    ],
)
def test_after_failed_attempt(
    failure: Failure, attempt: int, cancel: bool, state: WorkOrderState
) -> None:
    policy = RetryPolicy(maximum_attempts=3, non_retryable_error_types=("invalid_input",), jitter=0)
    outcome = after_failed_attempt(
        policy=policy, attempt=attempt, failure=failure, cancel_requested=cancel, now=NOW
    )
    assert outcome.state is state
    assert (outcome.available_at is not None) == (state is WorkOrderState.QUEUED)


def test_pick_respects_budget_and_key_room() -> None:
    candidates = [flow.Candidate(i, key) for i, key in enumerate("aabacbb")]
    assert [c.seq for c in flow.pick(candidates, 3)] == [0, 1, 2]
    picked = flow.pick(candidates, 10, {"a": 1, "b": 2, "c": 0})
    assert [c.seq for c in picked] == [0, 2, 5]
    assert [c.seq for c in flow.trim_per_key(picked, {"a": 1, "b": 1})] == [0, 2]


@pytest.mark.parametrize(
    "name",
    [
        "",
        "namespaces/x/queues",
        "namespaces/X/queues/q",
        "namespaces/x/queues/q/extra",
        "tenants/x/queues/q",
    ],
)
def test_bad_queue_names(name: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        validation.parse_queue(name, "parent")
    assert info.value.violations[0].field == "parent"


def test_page_tokens_are_bound_to_scope_and_tamper_evident() -> None:
    tokens = PageTokens("a-secret-of-sixteen+")
    token = tokens.encode("scope-1", {"seq": 42})
    assert tokens.decode("scope-1", token) == {"seq": 42}
    assert tokens.decode("scope-1", "") is None
    for scope, bad in (("scope-2", token), ("scope-1", token[:-3] + "AAA"), ("scope-1", "%%%")):
        with pytest.raises(InvalidArgument):
            tokens.decode(scope, bad)
    with pytest.raises(InvalidArgument):
        PageTokens("another-secret-xyz").decode("scope-1", token)
    assert (page_size(0, 50, 1000), page_size(5000, 50, 1000)) == (50, 1000)


def test_settings_errors_name_every_bad_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_DATABASE_URL", "mysql://nope")
    monkeypatch.setenv("CONVEYOR_LISTEN_ADDRESS", "no-port")
    with pytest.raises(ConfigurationError) as info:
        load(CoreSettings)
    message = str(info.value)
    assert "CONVEYOR_DATABASE_URL" in message and "CONVEYOR_LISTEN_ADDRESS" in message


@pytest.mark.parametrize(
    "instant",
    [
        datetime(2026, 11, 21, 9, 48, 12, 345678, tzinfo=UTC),
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2030, 1, 1, 1, tzinfo=timezone(timedelta(hours=-5))),
    ],
)
def test_order_timestamps_match_the_well_known_conversion(instant: datetime) -> None:
    order = WorkOrder(
        id=uuid.uuid4(),
        namespace="ns",
        queue="q",
        state=WorkOrderState.LEASED,
        spec=WorkOrderSpec(not_before=instant, retry_policy=RetryPolicy(maximum_attempts=5)),
        attempt=1,
        created_at=instant,
        updated_at=instant,
        available_at=instant,
        lease_expires_at=instant,
        completed_at=instant,
    )
    message = convert.order_to_pb(order)
    expected = ts(instant)
    for field in ("create_time", "update_time", "available_time", "lease_expire_time"):
        assert getattr(message, field) == expected, field
    assert message.complete_time == expected and message.spec.not_before == expected
    assert message.spec.retry_policy == convert.retry_policy_to_pb(order.spec.retry_policy)
    # The shared policy message is copied, never handed out.
    message.spec.retry_policy.maximum_attempts = 9
    assert convert.order_to_pb(order).spec.retry_policy.maximum_attempts == 5


def test_retry_policies_read_back_equal_whatever_their_cached_twin() -> None:
    policy = RetryPolicy(timedelta(seconds=2), 3.0, timedelta(seconds=30), 0.1, 7, ("timeout",))
    assert policy_from_json(policy_to_json(policy)) == policy
    assert policy_from_json(policy_to_json(policy)) is policy_from_json(policy_to_json(policy))
    assert policy_from_json(policy_to_json(RetryPolicy())) == RetryPolicy()
