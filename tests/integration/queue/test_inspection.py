"""Position, stats, listing with paging, dead letters and redrive."""

from __future__ import annotations

import grpc
import pytest

from conveyor.common.v1 import types_pb2
from conveyor.queue.v1 import messages_pb2 as m
from conveyor.queue.v1 import service_pb2 as rpc
from conveyor_core.grpc import rich_error_details
from tests.helpers.queue import QueueEnv, queue_name, seconds, spec

S = m.WorkOrderState


async def test_position_counts_orders_ahead_and_estimates_start(env: QueueEnv) -> None:
    await env.submit_many([spec(priority=1) for _ in range(4)])
    low = await env.submit(priority=0)
    high = await env.submit(priority=5)
    position = await env.stub.GetWorkOrderPosition(rpc.GetWorkOrderPositionRequest(name=low.name))
    assert position.ahead == 5 and not position.HasField("estimated_start_time")
    top = await env.stub.GetWorkOrderPosition(rpc.GetWorkOrderPositionRequest(name=high.name))
    assert top.ahead == 0
    for lw in await env.lease(n=3):  # dispatches give the queue a rate to estimate from
        await env.complete(lw)
    position = await env.stub.GetWorkOrderPosition(rpc.GetWorkOrderPositionRequest(name=low.name))
    assert position.ahead == 2 and position.dispatch_rate_per_second > 0
    eta = position.estimated_start_time.ToDatetime() - env.clock.now().replace(tzinfo=None)
    assert eta.total_seconds() == pytest.approx(2 / position.dispatch_rate_per_second, rel=0.01)
    done = await env.stub.GetWorkOrderPosition(rpc.GetWorkOrderPositionRequest(name=high.name))
    assert done.state == S.WORK_ORDER_STATE_SUCCEEDED and done.ahead == 0


async def test_queue_stats(env: QueueEnv) -> None:
    await env.submit_many([spec() for _ in range(6)])
    env.clock.advance(4)
    leased = await env.lease(n=2)
    await env.complete(leased[0])
    stats = (await env.stub.GetQueueStats(rpc.GetQueueStatsRequest(name=queue_name()))).stats
    assert {d.state: d.count for d in stats.depth} == {
        S.WORK_ORDER_STATE_QUEUED: 4,
        S.WORK_ORDER_STATE_LEASED: 1,
        S.WORK_ORDER_STATE_SUCCEEDED: 1,
    }
    assert stats.in_flight == 1
    assert stats.oldest_queued_age.ToTimedelta().total_seconds() == pytest.approx(4, abs=0.01)
    assert stats.add_rate_per_second > 0 and stats.dispatch_rate_per_second > 0
    assert stats.add_rate_per_second == pytest.approx(3 * stats.dispatch_rate_per_second)
    assert stats.wait_time_p50.ToTimedelta().total_seconds() == pytest.approx(4, abs=0.01)
    assert stats.wait_time_p99.ToTimedelta() >= stats.wait_time_p50.ToTimedelta()


async def test_list_filters_and_pages(env: QueueEnv) -> None:
    orders = await env.submit_many(
        [spec(concurrency_key="k1" if i % 2 else "k2") for i in range(7)]
    )
    pages, token = [], ""
    while True:
        page = await env.stub.ListWorkOrders(
            rpc.ListWorkOrdersRequest(parent=queue_name(), page_size=3, page_token=token)
        )
        pages.append([o.id for o in page.work_orders])
        token = page.next_page_token
        if not token:
            break
    assert [len(p) for p in pages] == [3, 3, 1]
    assert [i for page in pages for i in page] == [o.id for o in orders]
    newest = await env.stub.ListWorkOrders(
        rpc.ListWorkOrdersRequest(
            parent=queue_name(), order=rpc.LIST_ORDER_NEWEST_FIRST, page_size=2
        )
    )
    assert [o.id for o in newest.work_orders] == [orders[6].id, orders[5].id]
    keyed = await env.stub.ListWorkOrders(
        rpc.ListWorkOrdersRequest(parent=queue_name(), concurrency_key="k1")
    )
    assert len(keyed.work_orders) == 3
    await env.lease(n=2)
    leased = await env.stub.ListWorkOrders(
        rpc.ListWorkOrdersRequest(
            parent="namespaces/test/queues/-", states=[S.WORK_ORDER_STATE_LEASED]
        )
    )
    assert [o.id for o in leased.work_orders] == [orders[0].id, orders[1].id]


@pytest.mark.parametrize("tamper", ["flip", "garbage", "other-filter"])
async def test_page_token_tampering_is_invalid_argument(env: QueueEnv, tamper: str) -> None:
    await env.submit_many([spec() for _ in range(3)])
    first = await env.stub.ListWorkOrders(
        rpc.ListWorkOrdersRequest(parent=queue_name(), page_size=1)
    )
    token, request = (
        first.next_page_token,
        rpc.ListWorkOrdersRequest(parent=queue_name(), page_size=1),
    )
    if tamper == "flip":
        request.page_token = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    elif tamper == "garbage":
        request.page_token = "not a token!"
    else:
        request.page_token = token
        request.states.append(S.WORK_ORDER_STATE_QUEUED)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await env.stub.ListWorkOrders(request)
    details = rich_error_details(info.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in details.field_violations] == ["page_token"]


async def _kill(env: QueueEnv, n: int, error_type: str) -> list[m.WorkOrder]:
    orders = await env.submit_many(
        [spec(retry_policy=types_pb2.RetryPolicy(maximum_attempts=1)) for _ in range(n)]
    )
    for lw in await env.lease(n=n):
        assert (await env.fail(lw, error_type=error_type)).state == S.WORK_ORDER_STATE_DEAD
    return orders


async def test_dead_letters_are_listed_and_redriven_once_with_who_and_why(env: QueueEnv) -> None:
    env.engine.settings = env.engine.settings.model_copy(update={"redrive_chunk_size": 2})
    network = await _kill(env, 5, "network")
    auth = await _kill(env, 2, "auth")
    dead = await env.stub.ListWorkOrders(
        rpc.ListWorkOrdersRequest(
            parent=queue_name(), states=[S.WORK_ORDER_STATE_DEAD], error_type="network"
        )
    )
    assert {o.id for o in dead.work_orders} == {o.id for o in network}

    request = rpc.RedriveWorkOrdersRequest(
        parent=queue_name(),
        error_type="network",
        reason="endpoint fixed",
        requested_by="alice",
        request_id="incident-42",
    )
    redrive = (await env.stub.RedriveWorkOrders(request)).redrive
    assert (redrive.redriven_count, redrive.requested_by, redrive.reason) == (
        5,
        "alice",
        "endpoint fixed",
    )
    again = (
        await env.stub.RedriveWorkOrders(request)
    ).redrive  # same request id: no second redrive
    assert again.name == redrive.name and again.redriven_count == 5

    for order in network:
        current = await env.get(order.name)
        assert current.state == S.WORK_ORDER_STATE_QUEUED and current.redrive_count == 1
        assert current.attempt == 0
        events = (
            await env.stub.ListWorkOrderEvents(rpc.ListWorkOrderEventsRequest(parent=order.name))
        ).events
        assert events[-1].reason == "redriven: endpoint fixed" and events[-1].actor == "alice"
    assert [(await env.get(o.name)).state for o in auth] == [S.WORK_ORDER_STATE_DEAD] * 2

    capped = (
        await env.stub.RedriveWorkOrders(
            rpc.RedriveWorkOrdersRequest(
                parent=queue_name(), reason="retry one", requested_by="bob", max_work_orders=1
            )
        )
    ).redrive
    assert capped.redriven_count == 1
    history = (await env.stub.ListRedrives(rpc.ListRedrivesRequest(parent=queue_name()))).redrives
    assert {(r.requested_by, r.redriven_count) for r in history} == {("alice", 5), ("bob", 1)}
    # redriven orders run again from attempt 1
    [lw] = await env.lease()
    assert lw.work_order.attempt == 1


async def test_redrive_requires_who_and_why(env: QueueEnv) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await env.stub.RedriveWorkOrders(rpc.RedriveWorkOrdersRequest(parent=queue_name()))
    fields = {f for f, _ in rich_error_details(info.value).field_violations}
    assert fields == {"reason", "requested_by"}


async def test_events_page(env: QueueEnv) -> None:
    order = await env.submit(
        retry_policy=types_pb2.RetryPolicy(
            maximum_attempts=3, initial_interval=seconds(0), jitter=0
        )
    )
    for _ in range(2):
        [lw] = await env.lease()
        await env.fail(lw)
    first = await env.stub.ListWorkOrderEvents(
        rpc.ListWorkOrderEventsRequest(parent=order.name, page_size=3)
    )
    rest = await env.stub.ListWorkOrderEvents(
        rpc.ListWorkOrderEventsRequest(
            parent=order.name, page_size=3, page_token=first.next_page_token
        )
    )
    reasons = [e.reason for e in list(first.events) + list(rest.events)]
    assert reasons[0] == "submitted" and len(reasons) == 5 and not rest.next_page_token
    assert [e.attempt for e in rest.events] == [2, 2]
