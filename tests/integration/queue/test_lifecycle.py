"""Submit, lease, complete, fail, retry, dead-letter, cancel, timeouts: over gRPC, real storage."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import grpc
import pytest

from conveyor.common.v1 import types_pb2
from conveyor.queue.v1 import messages_pb2 as m
from conveyor.queue.v1 import service_pb2 as rpc
from conveyor_core.grpc import rich_error_details
from tests.helpers.queue import QueueEnv, queue_name, seconds, spec

S = m.WorkOrderState


async def test_submit_lease_complete_records_history(env: QueueEnv) -> None:
    order = await env.submit(data=b"in", idempotency_key="k-1")
    assert order.state == S.WORK_ORDER_STATE_QUEUED and order.attempt == 0
    [leased] = await env.lease()
    assert leased.work_order.id == order.id
    assert leased.work_order.state == S.WORK_ORDER_STATE_LEASED and leased.work_order.attempt == 1
    assert leased.work_order.spec.payload.data == b"in"
    done = await env.complete(leased, data=b"out")
    assert done.state == S.WORK_ORDER_STATE_SUCCEEDED and done.result.data == b"out"
    assert done.HasField("complete_time")

    events = (
        await env.stub.ListWorkOrderEvents(rpc.ListWorkOrderEventsRequest(parent=order.name))
    ).events
    assert [(e.from_state, e.to_state) for e in events] == [
        (S.WORK_ORDER_STATE_UNSPECIFIED, S.WORK_ORDER_STATE_QUEUED),
        (S.WORK_ORDER_STATE_QUEUED, S.WORK_ORDER_STATE_LEASED),
        (S.WORK_ORDER_STATE_LEASED, S.WORK_ORDER_STATE_SUCCEEDED),
    ]
    assert events[1].actor == "worker-1"
    assert all(e.HasField("time") for e in events)


async def test_priority_first_then_fifo(env: QueueEnv) -> None:
    submitted = await env.submit_many(
        [spec(priority=p, data=str(i).encode()) for i, p in enumerate([1, 5, 1, 5, 0, 9, 1])]
    )
    leased = [lw.work_order for lw in await env.lease(n=7)]
    want = sorted(range(7), key=lambda i: (-submitted[i].spec.priority, i))
    assert [o.id for o in leased] == [submitted[i].id for i in want]
    # one at a time gives the same order
    again = await env.submit_many([spec(priority=p) for p in [2, 2, 3]])
    one_by_one = [(await env.lease())[0].work_order.id for _ in range(3)]
    assert one_by_one == [again[2].id, again[0].id, again[1].id]


async def test_not_before_holds_the_order_until_due(env: QueueEnv) -> None:
    from google.protobuf import timestamp_pb2

    due = timestamp_pb2.Timestamp()
    due.FromDatetime(env.clock.now() + timedelta(seconds=30))
    order = await env.submit(not_before=due)
    assert await env.lease() == []
    env.clock.advance(31)
    [leased] = await env.lease()
    assert leased.work_order.id == order.id


async def test_idempotent_submit_under_concurrent_duplicates(env: QueueEnv) -> None:
    async def submit_once() -> rpc.SubmitWorkOrderResponse:
        return await env.stub.SubmitWorkOrder(
            rpc.SubmitWorkOrderRequest(
                parent=queue_name(), work_order=spec(idempotency_key="only-once")
            )
        )

    responses = await asyncio.gather(*(submit_once() for _ in range(24)))
    ids = {r.work_order.id for r in responses}
    assert len(ids) == 1
    assert sum(not r.already_exists for r in responses) == 1
    # also inside one batch and across batches
    batch = await env.submit_many(
        [spec(idempotency_key="only-once"), spec(idempotency_key="b"), spec(idempotency_key="b")]
    )
    assert batch[0].id in ids and batch[1].id == batch[2].id
    listed = await env.stub.ListWorkOrders(rpc.ListWorkOrdersRequest(parent=queue_name()))
    assert len(listed.work_orders) == 2


async def test_lease_expiry_requeues_with_attempt_counted_and_refuses_stale_token(
    env: QueueEnv,
) -> None:
    order = await env.submit(
        retry_policy=types_pb2.RetryPolicy(
            initial_interval=seconds(0), maximum_attempts=5, jitter=0
        )
    )
    [first] = await env.lease(lease=10)
    env.clock.advance(11)
    assert await env.sweep() == 1
    requeued = await env.get(order.name)
    assert requeued.state == S.WORK_ORDER_STATE_QUEUED and requeued.attempt == 1
    assert requeued.last_timeout_kind == m.TimeoutKind.TIMEOUT_KIND_LEASE_EXPIRED
    [second] = await env.lease(lease=10, worker="worker-2")
    assert second.work_order.attempt == 2 and second.lease_token != first.lease_token

    for call in (
        env.complete(first),
        env.fail(first),
        env.stub.HeartbeatWorkOrder(
            rpc.HeartbeatWorkOrderRequest(name=order.name, lease_token=first.lease_token)
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        details = rich_error_details(info.value)
        assert details.code == grpc.StatusCode.FAILED_PRECONDITION
        assert details.precondition_violations and details.reason == "STALE_LEASE"
    still = await env.get(order.name)
    assert still.state == S.WORK_ORDER_STATE_LEASED and still.leased_by == "worker-2"
    assert (await env.complete(second)).state == S.WORK_ORDER_STATE_SUCCEEDED


async def test_expired_but_unswept_lease_is_refused(env: QueueEnv) -> None:
    await env.submit()
    [leased] = await env.lease(lease=5)
    env.clock.advance(6)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await env.complete(leased)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_heartbeat_extends_lease_and_records_progress(env: QueueEnv) -> None:
    order = await env.submit()
    [leased] = await env.lease(lease=10)
    for _ in range(3):
        env.clock.advance(8)
        beat = await env.stub.HeartbeatWorkOrder(
            rpc.HeartbeatWorkOrderRequest(
                name=order.name,
                lease_token=leased.lease_token,
                progress=m.Progress(percent=40, message="halfway"),
            )
        )
        assert not beat.cancel_requested
        assert await env.sweep() == 0
    current = await env.get(order.name)
    assert current.progress.percent == 40 and current.progress.message == "halfway"
    assert current.state == S.WORK_ORDER_STATE_LEASED


async def test_retry_backoff_schedule_then_dead_letter(env: QueueEnv) -> None:
    order = await env.submit(
        retry_policy=types_pb2.RetryPolicy(
            initial_interval=seconds(2),
            backoff_coefficient=3,
            maximum_interval=seconds(10),
            jitter=0,
            maximum_attempts=4,
        )
    )
    delays = []
    for attempt in range(1, 5):
        [leased] = await env.lease()
        assert leased.work_order.attempt == attempt
        failed = await env.fail(leased)
        if attempt < 4:
            assert failed.state == S.WORK_ORDER_STATE_QUEUED
            delay = failed.available_time.ToDatetime() - env.clock.now().replace(tzinfo=None)
            delays.append(delay.total_seconds())
            assert await env.lease() == []  # not before the backoff
            env.clock.advance(delay)
    assert delays == [2, 6, 10]  # 2, 2*3, min(2*9, 10)
    assert failed.state == S.WORK_ORDER_STATE_DEAD
    assert failed.last_failure.type == "network"
    dead = await env.stub.ListWorkOrders(
        rpc.ListWorkOrdersRequest(parent=queue_name(), states=[S.WORK_ORDER_STATE_DEAD])
    )
    assert [o.id for o in dead.work_orders] == [order.id]


async def test_jitter_spreads_the_backoff_within_bounds(env: QueueEnv) -> None:
    policy = types_pb2.RetryPolicy(initial_interval=seconds(10), jitter=0.5, maximum_attempts=9)
    orders = await env.submit_many([spec(retry_policy=policy) for _ in range(12)])
    delays = set()
    for leased in await env.lease(n=12):
        failed = await env.fail(leased)
        delays.add(
            round(
                (
                    failed.available_time.ToDatetime() - env.clock.now().replace(tzinfo=None)
                ).total_seconds(),
                3,
            )
        )
    assert len(orders) == 12 and len(delays) > 1
    assert all(5 <= d <= 15 for d in delays)


async def test_non_retryable_failures_fail_at_once(env: QueueEnv) -> None:
    policy = types_pb2.RetryPolicy(maximum_attempts=5, non_retryable_error_types=["invalid_input"])
    a = await env.submit(retry_policy=policy)
    b = await env.submit(retry_policy=policy)
    leased = {lw.work_order.id: lw for lw in await env.lease(n=2)}
    assert (await env.fail(leased[a.id], retryable=False)).state == S.WORK_ORDER_STATE_FAILED
    assert (
        await env.fail(leased[b.id], error_type="invalid_input")
    ).state == S.WORK_ORDER_STATE_FAILED


async def test_explicit_retry_delay_overrides_backoff(env: QueueEnv) -> None:
    await env.submit(
        retry_policy=types_pb2.RetryPolicy(initial_interval=seconds(1), maximum_attempts=3)
    )
    [leased] = await env.lease()
    failed = await env.fail(leased, retry_delay=seconds(42))
    delay = failed.available_time.ToDatetime() - env.clock.now().replace(tzinfo=None)
    assert delay.total_seconds() == 42


async def test_cancel_queued_and_leased_orders(env: QueueEnv) -> None:
    queued = await env.submit(priority=0)
    running = await env.submit(priority=9)
    [leased] = await env.lease()
    assert leased.work_order.id == running.id

    cancelled = (
        await env.stub.CancelWorkOrder(
            rpc.CancelWorkOrderRequest(name=queued.name, reason="not needed")
        )
    ).work_order
    assert cancelled.state == S.WORK_ORDER_STATE_CANCELLED
    assert await env.lease() == []

    asked = (
        await env.stub.CancelWorkOrder(rpc.CancelWorkOrderRequest(name=running.name))
    ).work_order
    assert asked.state == S.WORK_ORDER_STATE_LEASED and asked.cancel_requested
    beat = await env.stub.HeartbeatWorkOrder(
        rpc.HeartbeatWorkOrderRequest(name=running.name, lease_token=leased.lease_token)
    )
    assert beat.cancel_requested
    stopped = await env.fail(leased, error_type="aborted")
    assert stopped.state == S.WORK_ORDER_STATE_CANCELLED

    with pytest.raises(grpc.aio.AioRpcError) as info:  # finished orders cannot be cancelled
        done_order = await env.submit()
        [lw] = await env.lease()
        await env.complete(lw)
        await env.stub.CancelWorkOrder(rpc.CancelWorkOrderRequest(name=done_order.name))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_cancelled_leased_order_whose_lease_expires_ends_cancelled(env: QueueEnv) -> None:
    order = await env.submit()
    await env.lease(lease=5)
    await env.stub.CancelWorkOrder(rpc.CancelWorkOrderRequest(name=order.name))
    env.clock.advance(6)
    await env.sweep()
    assert (await env.get(order.name)).state == S.WORK_ORDER_STATE_CANCELLED


async def test_timeouts_are_recorded_with_their_kind(env: QueueEnv) -> None:
    from google.protobuf import timestamp_pb2

    policy = types_pb2.RetryPolicy(maximum_attempts=1)
    deadline = timestamp_pb2.Timestamp()
    deadline.FromDatetime(env.clock.now() + timedelta(seconds=5))
    late = await env.submit(queue="late", deadline=deadline)
    hb = await env.submit(queue="hb", heartbeat_timeout=seconds(3), retry_policy=policy)
    stc = await env.submit(queue="stc", start_to_close_timeout=seconds(20), retry_policy=policy)
    await env.lease(queues=["hb"], lease=60)
    [stc_lease] = await env.lease(queues=["stc"], lease=60)
    for _ in range(5):  # keep heartbeating the start-to-close order: it still times out at 20 s
        env.clock.advance(4)
        await env.sweep()
        if (await env.get(stc.name)).state != S.WORK_ORDER_STATE_LEASED:
            break
        await env.stub.HeartbeatWorkOrder(
            rpc.HeartbeatWorkOrderRequest(name=stc.name, lease_token=stc_lease.lease_token)
        )
    kinds = {
        o.name: (o.state, o.last_timeout_kind)
        for o in [await env.get(late.name), await env.get(hb.name), await env.get(stc.name)]
    }
    assert kinds == {
        late.name: (S.WORK_ORDER_STATE_FAILED, m.TimeoutKind.TIMEOUT_KIND_SCHEDULE_TO_START),
        hb.name: (S.WORK_ORDER_STATE_DEAD, m.TimeoutKind.TIMEOUT_KIND_HEARTBEAT),
        stc.name: (S.WORK_ORDER_STATE_DEAD, m.TimeoutKind.TIMEOUT_KIND_START_TO_CLOSE),
    }
    events = (
        await env.stub.ListWorkOrderEvents(rpc.ListWorkOrderEventsRequest(parent=hb.name))
    ).events
    assert events[-1].timeout_kind == m.TimeoutKind.TIMEOUT_KIND_HEARTBEAT


async def test_batch_complete_answers_each_item_and_records_each_completion(
    env: QueueEnv,
) -> None:
    first, second, third = await env.submit_many([spec(data=b"1"), spec(data=b"2"), spec()])
    leased = {lw.work_order.id: lw for lw in await env.lease(n=3)}
    stale = rpc.CompleteWorkOrderRequest(name=second.name, lease_token="not-the-token")
    missing_name = first.name.rsplit("/", 1)[0] + "/00000000-0000-4000-8000-000000000000"
    reply = await env.stub.BatchCompleteWorkOrders(
        rpc.BatchCompleteWorkOrdersRequest(
            parent="namespaces/test",
            requests=[
                rpc.CompleteWorkOrderRequest(
                    name=first.name,
                    lease_token=leased[first.id].lease_token,
                    result=types_pb2.Payload(data=b"done-1"),
                ),
                stale,
                rpc.CompleteWorkOrderRequest(
                    name=third.name, lease_token=leased[third.id].lease_token
                ),
                rpc.CompleteWorkOrderRequest(name=missing_name, lease_token="x"),
            ],
        )
    )
    codes = [s.code for s in reply.statuses]
    assert codes == [
        grpc.StatusCode.OK.value[0],
        grpc.StatusCode.FAILED_PRECONDITION.value[0],
        grpc.StatusCode.OK.value[0],
        grpc.StatusCode.NOT_FOUND.value[0],
    ]
    done = await env.get(first.name)
    assert done.state == S.WORK_ORDER_STATE_SUCCEEDED and done.result.data == b"done-1"
    assert (await env.get(second.name)).state == S.WORK_ORDER_STATE_LEASED
    assert (await env.get(third.name)).state == S.WORK_ORDER_STATE_SUCCEEDED
    for order in (first, third):
        events = (
            await env.stub.ListWorkOrderEvents(rpc.ListWorkOrderEventsRequest(parent=order.name))
        ).events
        assert [e.to_state for e in events][-1] == S.WORK_ORDER_STATE_SUCCEEDED
        assert events[-1].attempt == 1
