"""Conformance of WorkOrderStore (services/queue/store/base.py): every method, on every
backend, through the Protocol alone, with the time from a manual clock."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from conveyor_core.clock import ManualClock
from conveyor_queue.domain.commands import CompleteParams, ListParams
from conveyor_queue.domain.model import (
    CompletedWorkOrder,
    Failure,
    LeasedWorkOrder,
    Payload,
    Progress,
    QueueConfig,
    QueueRef,
    RateLimit,
    RetryPolicy,
    TimeoutKind,
    WorkOrder,
    WorkOrderRef,
    WorkOrderSpec,
    WorkOrderState,
)
from conveyor_queue.domain.retry import RetryPlan
from conveyor_queue.errors import InvalidState, StaleLease, WorkOrderNotFound
from conveyor_queue.store.base import (
    CancelParams,
    FailParams,
    HeartbeatParams,
    LeaseParams,
    NewWorkOrder,
    RedriveParams,
    TokenGate,
    WorkOrderStore,
)

NS = "conformance"  # rebound per test (conftest's namespace fixture): a module shares one database
JOBS = QueueRef(NS, "jobs")
LEASE = timedelta(seconds=30)
#: No jitter: delays are exact, so the tests can name the instant a retry is due.
POLICY = RetryPolicy(timedelta(seconds=2), 2.0, timedelta(seconds=60), 0.0, 3)


def names_in(ns: str) -> dict[str, object]:
    """The module names built on this test's namespace (the `namespace` fixture binds them)."""
    return {"JOBS": QueueRef(ns, "jobs")}


def mine(orders: list[WorkOrder]) -> list[WorkOrder]:
    """This test's part of an answer that spans namespaces (the sweepers')."""
    return [o for o in orders if o.namespace == NS]


def new(
    queue: QueueRef | None = None,
    *,
    payload: bytes = b"{}",
    policy: RetryPolicy = POLICY,
    **spec: object,
) -> NewWorkOrder:
    return NewWorkOrder(
        uuid.uuid4(),
        queue or JOBS,
        WorkOrderSpec(payload=Payload(payload, "application/json"), retry_policy=policy, **spec),  # type: ignore[arg-type]
        correlation_id="corr",
        traceparent="",
    )


async def submit(
    store: WorkOrderStore, clock: ManualClock, *orders: NewWorkOrder
) -> list[WorkOrder]:
    results = await store.work_order_insert_many(list(orders), clock.now())
    return [r.work_order for r in results]


async def lease(
    store: WorkOrderStore,
    clock: ManualClock,
    gate: TokenGate,
    n: int = 10,
    queues: tuple[str, ...] = ("jobs",),
    duration: timedelta = LEASE,
) -> list[LeasedWorkOrder]:
    return await store.work_order_lease_available(
        LeaseParams(NS, queues, n, duration, "worker-1", clock.now()), gate
    )


# -- submit ---------------------------------------------------------------------------


async def test_insert_many_stores_queued_orders_and_honours_idempotency_keys(
    queue_store: WorkOrderStore, clock: ManualClock
) -> None:
    first, keyed = new(), new(idempotency_key="once")
    results = await queue_store.work_order_insert_many([first, keyed], clock.now())
    assert [r.already_exists for r in results] == [False, False]
    stored = results[0].work_order
    assert (stored.id, stored.state, stored.attempt) == (first.id, WorkOrderState.QUEUED, 0)
    assert stored.spec.payload == Payload(b"{}", "application/json")
    assert stored.spec.retry_policy == POLICY and stored.correlation_id == "corr"
    assert stored.created_at == clock.now() == stored.available_at

    clock.advance(5)
    [again] = await queue_store.work_order_insert_many([new(idempotency_key="once")], clock.now())
    assert again.already_exists and again.work_order.id == keyed.id


# -- lease ----------------------------------------------------------------------------


async def test_lease_hands_out_available_orders_by_priority_then_age(
    queue_store: WorkOrderStore, clock: ManualClock, gate: TokenGate
) -> None:
    low = (await submit(queue_store, clock, new()))[0]
    clock.advance(1)
    high = (await submit(queue_store, clock, new(priority=5)))[0]
    later = (await submit(queue_store, clock, new(not_before=clock.now() + timedelta(hours=1))))[0]

    leased = await lease(queue_store, clock, gate)
    assert [lw.work_order.id for lw in leased] == [high.id, low.id]  # `later` is not due
    order = leased[0].work_order
    assert order.state is WorkOrderState.LEASED and order.attempt == 1
    assert order.leased_by == "worker-1" and order.lease_expires_at == clock.now() + LEASE
    assert leased[0].lease_token and leased[0].lease_token == leased[1].lease_token
    assert await lease(queue_store, clock, gate) == []

    clock.advance(timedelta(hours=1))
    [due] = await lease(queue_store, clock, gate)
    assert due.work_order.id == later.id


async def test_lease_respects_the_limit_pause_and_in_flight_cap(
    queue_store: WorkOrderStore, clock: ManualClock, gate: TokenGate
) -> None:
    await submit(queue_store, clock, *(new() for _ in range(5)))
    assert len(await lease(queue_store, clock, gate, n=2)) == 2
    await queue_store.queue_upsert(
        QueueConfig(NS, "jobs", max_in_flight=3), frozenset({"max_in_flight"}), clock.now()
    )
    assert len(await lease(queue_store, clock, gate, n=10)) == 1  # 2 in flight + 1 = the cap
    await queue_store.queue_upsert(
        QueueConfig(NS, "jobs", paused=True), frozenset({"paused", "max_in_flight"}), clock.now()
    )
    assert await lease(queue_store, clock, gate) == []


async def test_lease_spends_rate_limit_tokens_refilled_on_the_clock(
    queue_store: WorkOrderStore, clock: ManualClock, gate: TokenGate
) -> None:
    rate = RateLimit(tokens=2, period=timedelta(minutes=1), burst=2)
    await queue_store.queue_upsert(
        QueueConfig(NS, "jobs", rate_limit=rate), frozenset({"rate_limit"}), clock.now()
    )
    await submit(queue_store, clock, *(new() for _ in range(5)))
    assert len(await lease(queue_store, clock, gate)) == 2
    assert await lease(queue_store, clock, gate) == []
    clock.advance(30)  # one token's worth
    assert len(await lease(queue_store, clock, gate)) == 1


# -- lease holders --------------------------------------------------------------------


async def test_heartbeat_extends_a_live_lease_and_records_progress(
    queue_store: WorkOrderStore, clock: ManualClock, gate: TokenGate
) -> None:
    await submit(queue_store, clock, new())
    [held] = await lease(queue_store, clock, gate)
    clock.advance(20)
    beat = await queue_store.work_order_heartbeat(
        HeartbeatParams(
            held.work_order.ref,
            held.lease_token,
            timedelta(seconds=60),
            Progress(40, "half"),
            clock.now(),
        )
    )
    assert beat.lease_expires_at == clock.now() + timedelta(seconds=60)
    assert beat.progress is not None and (beat.progress.percent, beat.progress.message) == (
        40,
        "half",
    )

    with pytest.raises(StaleLease):
        await queue_store.work_order_heartbeat(
            HeartbeatParams(held.work_order.ref, "not-the-token", None, None, clock.now())
        )
    clock.advance(61)  # past the extended lease
    with pytest.raises(StaleLease):
        await queue_store.work_order_heartbeat(
            HeartbeatParams(held.work_order.ref, held.lease_token, None, None, clock.now())
        )


async def test_complete_many_answers_each_item_on_its_own(
    queue_store: WorkOrderStore, clock: ManualClock, gate: TokenGate
) -> None:
    await submit(queue_store, clock, new(), new())
    a, b = await lease(queue_store, clock, gate)
    missing = WorkOrderRef(NS, "jobs", uuid.uuid4())
    results = await queue_store.work_order_complete_many(
        [
            CompleteParams(a.work_order.ref, a.lease_token, Payload(b"42", "text/plain")),
            CompleteParams(b.work_order.ref, "stale", Payload()),
            CompleteParams(missing, "any", Payload()),
        ],
        clock.now(),
    )
    done, stale, unknown = results
    assert isinstance(done, WorkOrder) and done.state is WorkOrderState.SUCCEEDED
    assert done.result == Payload(b"42", "text/plain") and done.completed_at == clock.now()
    assert isinstance(stale, StaleLease) and isinstance(unknown, WorkOrderNotFound)

    [brief] = await queue_store.work_order_complete_many(
        [CompleteParams(b.work_order.ref, b.lease_token, Payload())], clock.now(), brief=True
    )
    assert isinstance(brief, WorkOrder | CompletedWorkOrder)
    assert brief.state is WorkOrderState.SUCCEEDED and brief.id == b.work_order.id


async def test_fail_applies_the_plan_to_the_locked_order(
    queue_store: WorkOrderStore, clock: ManualClock, gate: TokenGate
) -> None:
    [order] = await submit(queue_store, clock, new())
    failure = Failure("network", "connection refused")
    for attempt, delay in ((1, 2), (2, 4)):
        [held] = await lease(queue_store, clock, gate)
        assert held.work_order.attempt == attempt
        failed = await queue_store.work_order_fail(
            FailParams(order.ref, held.lease_token, RetryPlan(failure, clock.now()))
        )
        assert failed.state is WorkOrderState.QUEUED
        assert failed.available_at == clock.now() + timedelta(seconds=delay)  # the backoff
        assert failed.last_failure == failure
        clock.advance(delay)
    [held] = await lease(queue_store, clock, gate)
    dead = await queue_store.work_order_fail(
        FailParams(order.ref, held.lease_token, RetryPlan(failure, clock.now()))
    )
    assert dead.state is WorkOrderState.DEAD  # 3 of 3 attempts

    [other] = await submit(queue_store, clock, new())
    [held] = await lease(queue_store, clock, gate)
    final = await queue_store.work_order_fail(
        FailParams(
            other.ref, held.lease_token, RetryPlan(Failure("bad", retryable=False), clock.now())
        )
    )
    assert final.state is WorkOrderState.FAILED
    with pytest.raises(StaleLease):
        await queue_store.work_order_fail(
            FailParams(other.ref, held.lease_token, RetryPlan(failure, clock.now()))
        )


async def test_cancel_ends_a_queued_order_and_asks_a_leased_one_to_stop(
    queue_store: WorkOrderStore, clock: ManualClock, gate: TokenGate
) -> None:
    queued, running = await submit(queue_store, clock, new(), new(priority=1))
    [held] = await lease(queue_store, clock, gate, n=1)
    assert held.work_order.id == running.id
    cancelled = await queue_store.work_order_cancel(
        CancelParams(queued.ref, "not needed", "ops", clock.now())
    )
    assert cancelled.state is WorkOrderState.CANCELLED
    asked = await queue_store.work_order_cancel(CancelParams(running.ref, "", "ops", clock.now()))
    assert asked.state is WorkOrderState.LEASED and asked.cancel_requested
    # The holder's failure then ends it CANCELLED, whatever the policy says.
    ended = await queue_store.work_order_fail(
        FailParams(running.ref, held.lease_token, RetryPlan(Failure("aborted"), clock.now()))
    )
    assert ended.state is WorkOrderState.CANCELLED
    again = await queue_store.work_order_cancel(CancelParams(queued.ref, "", "ops", clock.now()))
    assert again.state is WorkOrderState.CANCELLED  # idempotent
    [done] = await submit(queue_store, clock, new())
    [held] = await lease(queue_store, clock, gate)
    await queue_store.work_order_complete_many(
        [CompleteParams(done.ref, held.lease_token, Payload())], clock.now()
    )
    with pytest.raises(InvalidState):
        await queue_store.work_order_cancel(CancelParams(done.ref, "", "ops", clock.now()))


# -- reads ----------------------------------------------------------------------------


async def test_get_finds_an_order_only_under_its_own_queue(
    queue_store: WorkOrderStore, clock: ManualClock
) -> None:
    [order] = await submit(queue_store, clock, new())
    assert (await queue_store.work_order_get(order.ref)).id == order.id
    for ref in (
        WorkOrderRef(NS, "other", order.id),
        WorkOrderRef("elsewhere", "jobs", order.id),
        WorkOrderRef(NS, "jobs", uuid.uuid4()),
    ):
        with pytest.raises(WorkOrderNotFound):
            await queue_store.work_order_get(ref)


async def test_list_filters_and_pages_in_seq_order(
    queue_store: WorkOrderStore, clock: ManualClock, gate: TokenGate
) -> None:
    orders = await submit(queue_store, clock, *(new(concurrency_key=k) for k in "abab"))
    await submit(queue_store, clock, new(QueueRef(NS, "other")))
    [held] = await lease(queue_store, clock, gate, n=1)

    page = await queue_store.work_order_list(ListParams(JOBS, limit=2))
    assert [o.id for _, o in page] == [o.id for o in orders[:2]]
    rest = await queue_store.work_order_list(ListParams(JOBS, after_seq=page[-1][0]))
    assert [o.id for _, o in rest] == [o.id for o in orders[2:]]
    newest = await queue_store.work_order_list(ListParams(JOBS, newest_first=True, limit=1))
    assert newest[0][1].id == orders[-1].id
    queued = await queue_store.work_order_list(ListParams(JOBS, states=(WorkOrderState.QUEUED,)))
    assert held.work_order.id not in {o.id for _, o in queued} and len(queued) == 3
    keyed = await queue_store.work_order_list(ListParams(JOBS, concurrency_key="b"))
    assert {o.id for _, o in keyed} == {orders[1].id, orders[3].id}
    everywhere = await queue_store.work_order_list(ListParams(QueueRef(NS, "-")))
    assert len(everywhere) == 5

    await queue_store.work_order_fail(
        FailParams(
            held.work_order.ref, held.lease_token, RetryPlan(Failure("network"), clock.now())
        )
    )
    by_error = await queue_store.work_order_list(ListParams(JOBS, error_type="network"))
    assert [o.id for _, o in by_error] == [held.work_order.id]


async def test_events_list_is_the_orders_history(
    queue_store: WorkOrderStore, clock: ManualClock, gate: TokenGate
) -> None:
    [order] = await submit(queue_store, clock, new())
    [held] = await lease(queue_store, clock, gate)
    clock.advance(1)
    await queue_store.work_order_complete_many(
        [CompleteParams(order.ref, held.lease_token, Payload())], clock.now()
    )
    events = await queue_store.work_order_events_list(order.ref, 0, 10)
    assert [(e.from_state, e.to_state) for e in events] == [
        (None, WorkOrderState.QUEUED),
        (WorkOrderState.QUEUED, WorkOrderState.LEASED),
        (WorkOrderState.LEASED, WorkOrderState.SUCCEEDED),
    ]
    assert events[-1].at == clock.now()
    later = await queue_store.work_order_events_list(order.ref, events[0].sequence, 10)
    assert later == events[1:]
    with pytest.raises(WorkOrderNotFound):
        await queue_store.work_order_events_list(WorkOrderRef(NS, "jobs", uuid.uuid4()), 0, 10)


async def test_count_ahead_counts_what_a_lease_would_hand_out_first(
    queue_store: WorkOrderStore, clock: ManualClock
) -> None:
    first, second = await submit(queue_store, clock, new(), new())
    [urgent] = await submit(queue_store, clock, new(priority=9))
    [future] = await submit(queue_store, clock, new(not_before=clock.now() + timedelta(minutes=5)))
    assert await queue_store.work_order_count_ahead(urgent, clock.now()) == 0
    assert await queue_store.work_order_count_ahead(first, clock.now()) == 1  # urgent
    assert await queue_store.work_order_count_ahead(second, clock.now()) == 2
    assert await queue_store.work_order_count_ahead(future, clock.now()) == 3  # due after all


async def test_next_available_is_the_earliest_future_instant(
    queue_store: WorkOrderStore, clock: ManualClock
) -> None:
    assert await queue_store.work_order_next_available(NS, ["jobs"], clock.now()) is None
    soon, later = clock.now() + timedelta(seconds=10), clock.now() + timedelta(seconds=50)
    await submit(queue_store, clock, new(), new(not_before=later), new(not_before=soon))
    assert await queue_store.work_order_next_available(NS, ["jobs"], clock.now()) == soon
    assert await queue_store.work_order_next_available(NS, ["other"], clock.now()) is None
    clock.advance(10)
    assert await queue_store.work_order_next_available(NS, ["jobs"], clock.now()) == later


async def test_wait_samples_are_the_time_from_available_to_leased(
    queue_store: WorkOrderStore, clock: ManualClock, gate: TokenGate
) -> None:
    start = clock.now()
    await submit(queue_store, clock, new())
    clock.advance(3)
    await submit(queue_store, clock, new())
    clock.advance(1)
    await lease(queue_store, clock, gate)
    samples = await queue_store.work_order_wait_samples(JOBS, start, 10)
    assert sorted(samples) == [timedelta(seconds=1), timedelta(seconds=4)]
    assert (
        await queue_store.work_order_wait_samples(JOBS, clock.now() + timedelta(seconds=1), 10)
        == []
    )


# -- sweepers -------------------------------------------------------------------------


async def test_expire_leases_requeues_an_attempt_whose_lease_ran_out(
    queue_store: WorkOrderStore, clock: ManualClock, gate: TokenGate
) -> None:
    [order] = await submit(queue_store, clock, new())
    [held] = await lease(queue_store, clock, gate)
    clock.advance(LEASE - timedelta(seconds=1))
    assert mine(await queue_store.work_order_expire_leases(clock.now(), 100)) == []
    clock.advance(1)
    [expired] = mine(await queue_store.work_order_expire_leases(clock.now(), 100))
    assert expired.id == order.id and expired.state is WorkOrderState.QUEUED
    assert expired.last_timeout_kind is TimeoutKind.LEASE_EXPIRED
    assert expired.available_at == clock.now() + timedelta(seconds=2)
    [late] = await queue_store.work_order_complete_many(
        [CompleteParams(order.ref, held.lease_token, Payload())], clock.now()
    )
    assert isinstance(late, StaleLease)  # the old holder's completion is refused


async def test_expire_deadlines_fails_orders_not_started_in_time(
    queue_store: WorkOrderStore, clock: ManualClock
) -> None:
    [order] = await submit(queue_store, clock, new(deadline=clock.now() + timedelta(minutes=1)))
    await submit(queue_store, clock, new())
    assert mine(await queue_store.work_order_expire_deadlines(clock.now(), 100)) == []
    clock.advance(timedelta(minutes=1))
    [late] = mine(await queue_store.work_order_expire_deadlines(clock.now(), 100))
    assert late.id == order.id and late.state is WorkOrderState.FAILED
    assert late.last_timeout_kind is TimeoutKind.SCHEDULE_TO_START


# -- queues ---------------------------------------------------------------------------


async def test_queue_settings_round_trip_and_masks_change_only_their_fields(
    queue_store: WorkOrderStore, clock: ManualClock
) -> None:
    assert await queue_store.queue_get(JOBS) == QueueConfig(NS, "jobs")  # never configured
    rate = RateLimit(10, timedelta(seconds=1), 20)
    set_ = await queue_store.queue_upsert(
        QueueConfig(NS, "jobs", max_in_flight=4, rate_limit=rate),
        frozenset({"max_in_flight", "rate_limit"}),
        clock.now(),
    )
    assert (set_.max_in_flight, set_.rate_limit, set_.created_at) == (4, rate, clock.now())
    clock.advance(1)
    paused = await queue_store.queue_upsert(
        QueueConfig(NS, "jobs", paused=True), frozenset({"paused"}), clock.now()
    )
    assert paused.paused and paused.max_in_flight == 4 and paused.rate_limit == rate
    assert paused.updated_at == clock.now()
    assert await queue_store.queue_get(JOBS) == paused
    assert await queue_store.queue_get_cached(JOBS) == paused


async def test_queue_list_pages_by_name(queue_store: WorkOrderStore, clock: ManualClock) -> None:
    for name in ("c", "a", "b"):
        await queue_store.queue_upsert(QueueConfig(NS, name), frozenset({"paused"}), clock.now())
    await queue_store.queue_upsert(
        QueueConfig("elsewhere", "z"), frozenset({"paused"}), clock.now()
    )
    assert [q.queue for q in await queue_store.queue_list(NS, "", 2)] == ["a", "b"]
    assert [q.queue for q in await queue_store.queue_list(NS, "b", 10)] == ["c"]


async def test_queue_depth_counts_by_state(
    queue_store: WorkOrderStore, clock: ManualClock, gate: TokenGate
) -> None:
    empty = await queue_store.queue_depth(JOBS)
    assert (empty.in_flight, empty.oldest_available_at) == (0, None)
    oldest = clock.now()
    await submit(queue_store, clock, new(), new(), new())
    clock.advance(1)
    await lease(queue_store, clock, gate, n=1)
    depth = await queue_store.queue_depth(JOBS)
    assert depth.by_state == {WorkOrderState.QUEUED: 2, WorkOrderState.LEASED: 1}
    assert depth.in_flight == 1 and depth.oldest_available_at == oldest


# -- dead letters ---------------------------------------------------------------------


async def _dead(
    store: WorkOrderStore, clock: ManualClock, gate: TokenGate, error: str
) -> WorkOrder:
    [order] = await submit(store, clock, new(policy=RetryPolicy(maximum_attempts=1, jitter=0.0)))
    [held] = await lease(store, clock, gate)
    return await store.work_order_fail(
        FailParams(order.ref, held.lease_token, RetryPlan(Failure(error), clock.now()))
    )


async def test_redrive_requeues_dead_orders_once_per_request(
    queue_store: WorkOrderStore, clock: ManualClock, gate: TokenGate
) -> None:
    network = [await _dead(queue_store, clock, gate, "network") for _ in range(3)]
    other = await _dead(queue_store, clock, gate, "invalid_input")
    assert {o.state for o in (*network, other)} == {WorkOrderState.DEAD}

    def params(request_id: str, error_type: str = "network") -> RedriveParams:
        return RedriveParams(
            JOBS, error_type, None, 0, "fixed upstream", "ops", request_id, 2, clock.now()
        )

    redrive = await queue_store.redrive_run(params("r-1"))
    assert redrive.redriven_count == 3 and redrive.requested_by == "ops"
    for order in network:
        again = await queue_store.work_order_get(order.ref)
        assert again.state is WorkOrderState.QUEUED and again.redrive_count == 1
    assert (await queue_store.work_order_get(other.ref)).state is WorkOrderState.DEAD
    repeated = await queue_store.redrive_run(params("r-1"))  # the same request: no second pass
    assert repeated.id == redrive.id and repeated.redriven_count == 3

    clock.advance(1)
    second = await queue_store.redrive_run(params("r-2", ""))
    assert second.redriven_count == 1  # the one left: any error type
    listed = await queue_store.redrive_list(JOBS, 0, 10)
    assert [r.id for r in listed] == [second.id, redrive.id]  # newest first
    assert [r.id for r in await queue_store.redrive_list(JOBS, 1, 10)] == [redrive.id]


async def test_close_gives_back_what_the_store_holds(queue_store: WorkOrderStore) -> None:
    await queue_store.close()
    await queue_store.close()  # idempotent; the fixture closes it once more
