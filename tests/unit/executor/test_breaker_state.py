"""The circuit breaker's state machine (pure)."""

from __future__ import annotations

from conveyor_executor.runners.breaker import (
    BreakerPolicy,
    BreakerState,
    Snapshot,
    admit,
    breaker_key,
    settle,
)

POLICY = BreakerPolicy(
    failure_threshold=3, cool_down_micros=10_000_000, trial_timeout_micros=5_000_000
)
T0 = 1_000_000_000


def test_consecutive_failures_open_and_a_success_resets_the_count() -> None:
    state = Snapshot()
    state = settle(state, healthy=False, trial=0, now=T0, policy=POLICY)
    state = settle(state, healthy=False, trial=0, now=T0, policy=POLICY)
    assert state == Snapshot(BreakerState.CLOSED, failures=2)
    state = settle(state, healthy=True, trial=0, now=T0, policy=POLICY)
    assert state.failures == 0
    for _ in range(3):
        state = settle(state, healthy=False, trial=0, now=T0 + 5, policy=POLICY)
    assert state.state is BreakerState.OPEN and state.opened_micros == T0 + 5


def test_open_refuses_until_cool_down_then_admits_one_trial() -> None:
    opened = Snapshot(BreakerState.OPEN, 3, opened_micros=T0)
    admission, same = admit(opened, T0 + 9_999_999, POLICY)
    assert not admission.allowed and same == opened
    assert admission.retry_in_seconds == 0.000001
    trial, half_open = admit(opened, T0 + 10_000_000, POLICY)
    assert trial.allowed and trial.trial == T0 + 10_000_000
    assert half_open.state is BreakerState.HALF_OPEN
    other, unchanged = admit(half_open, T0 + 10_000_001, POLICY)
    assert not other.allowed and unchanged == half_open


def test_trial_outcome_closes_or_reopens() -> None:
    half_open = Snapshot(BreakerState.HALF_OPEN, 3, opened_micros=T0, trial_micros=T0 + 10)
    assert settle(half_open, True, T0 + 10, T0 + 20, POLICY) == Snapshot()
    reopened = settle(half_open, False, T0 + 10, T0 + 20, POLICY)
    assert reopened.state is BreakerState.OPEN and reopened.opened_micros == T0 + 20


def test_late_answers_of_other_calls_do_not_move_open_or_half_open() -> None:
    half_open = Snapshot(BreakerState.HALF_OPEN, 3, opened_micros=T0, trial_micros=T0 + 10)
    assert settle(half_open, True, trial=0, now=T0 + 20, policy=POLICY) == half_open
    assert settle(half_open, True, trial=T0 + 99, now=T0 + 20, policy=POLICY) == half_open
    opened = Snapshot(BreakerState.OPEN, 3, opened_micros=T0)
    assert settle(opened, True, 0, T0 + 1, POLICY) == opened


def test_an_abandoned_trial_can_be_taken_over() -> None:
    half_open = Snapshot(BreakerState.HALF_OPEN, 3, opened_micros=T0, trial_micros=T0)
    admission, after = admit(half_open, T0 + 5_000_000, POLICY)
    assert admission.allowed and after.trial_micros == T0 + 5_000_000


def test_snapshot_round_trips_and_garbage_reads_as_closed() -> None:
    state = Snapshot(BreakerState.HALF_OPEN, 4, 123, 456)
    assert Snapshot.decode(state.encode()) == state
    assert Snapshot.decode(None) == Snapshot()
    assert Snapshot.decode("not json") == Snapshot()


def test_key_ignores_query_and_credentials_but_not_namespace_or_method() -> None:
    key = breaker_key("ns", "post", "HTTPS://user:pw@Api.Example.com:8443/v1/charge?id=7#x")
    assert key == "ns POST https://api.example.com:8443/v1/charge"
    assert breaker_key("other", "POST", "https://api.example.com:8443/v1/charge") != key
    assert breaker_key("ns", "GET", "https://api.example.com:8443/v1/charge") != key
