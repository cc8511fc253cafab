"""Bad input gets INVALID_ARGUMENT (or NOT_FOUND) with field violations, and changes nothing."""

from __future__ import annotations

import uuid

import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2

from conveyor.common.v1 import types_pb2
from conveyor.queue.v1 import messages_pb2 as m
from conveyor.queue.v1 import service_pb2 as rpc
from conveyor_core.grpc import rich_error_details
from tests.helpers.queue import QueueEnv, queue_name, spec

BIG = b"x" * (1024 * 1024 + 1)
ORDER = f"namespaces/test/queues/jobs/workOrders/{uuid.uuid4()}"

BAD_SUBMITS = {
    "queue name format": (
        rpc.SubmitWorkOrderRequest(parent="namespaces/test/queues/Bad Queue!"),
        "parent",
    ),
    "missing namespace": (rpc.SubmitWorkOrderRequest(parent="namespaces//queues/jobs"), "parent"),
    "namespace with a trailing newline": (
        rpc.SubmitWorkOrderRequest(parent="namespaces/test\n/queues/jobs"),
        "parent",
    ),
    "queue with a trailing newline": (
        rpc.SubmitWorkOrderRequest(parent="namespaces/test/queues/jobs\n"),
        "parent",
    ),
    "infinite backoff coefficient": (
        rpc.SubmitWorkOrderRequest(
            parent=queue_name(),
            work_order=m.WorkOrderSpec(
                retry_policy=types_pb2.RetryPolicy(backoff_coefficient=float("inf"))
            ),
        ),
        "work_order.retry_policy.backoff_coefficient",
    ),
    "missing parent": (rpc.SubmitWorkOrderRequest(), "parent"),
    "not a queue name": (rpc.SubmitWorkOrderRequest(parent="queues/jobs"), "parent"),
    "negative priority": (
        rpc.SubmitWorkOrderRequest(parent=queue_name(), work_order=spec(priority=-1)),
        "work_order.priority",
    ),
    "priority above range": (
        rpc.SubmitWorkOrderRequest(parent=queue_name(), work_order=spec(priority=10**6)),
        "work_order.priority",
    ),
    "oversize payload": (
        rpc.SubmitWorkOrderRequest(parent=queue_name(), work_order=spec(data=BIG)),
        "work_order.payload.data",
    ),
    "negative timeout": (
        rpc.SubmitWorkOrderRequest(
            parent=queue_name(),
            work_order=m.WorkOrderSpec(heartbeat_timeout=duration_pb2.Duration(seconds=-1)),
        ),
        "work_order.heartbeat_timeout",
    ),
    "bad retry policy": (
        rpc.SubmitWorkOrderRequest(
            parent=queue_name(),
            work_order=m.WorkOrderSpec(
                retry_policy=types_pb2.RetryPolicy(backoff_coefficient=0.5, maximum_attempts=2)
            ),
        ),
        "work_order.retry_policy.backoff_coefficient",
    ),
    "long idempotency key": (
        rpc.SubmitWorkOrderRequest(
            parent=queue_name(), work_order=m.WorkOrderSpec(idempotency_key="k" * 300)
        ),
        "work_order.idempotency_key",
    ),
}


async def _invalid(call) -> list[str]:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    details = rich_error_details(info.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert details.reason == "INVALID_ARGUMENT"
    return [f for f, _ in details.field_violations]


@pytest.mark.parametrize("case", sorted(BAD_SUBMITS))
async def test_bad_submit(env: QueueEnv, case: str) -> None:
    request, field = BAD_SUBMITS[case]
    assert field in await _invalid(env.stub.SubmitWorkOrder(request))
    # nothing was stored, and the service still serves
    listed = await env.stub.ListWorkOrders(
        rpc.ListWorkOrdersRequest(parent="namespaces/test/queues/-")
    )
    assert list(listed.work_orders) == []
    assert (await env.submit()).state == m.WorkOrderState.WORK_ORDER_STATE_QUEUED


async def test_bad_batch_reports_every_bad_item_and_stores_none(env: QueueEnv) -> None:
    fields = await _invalid(
        env.stub.BatchSubmitWorkOrders(
            rpc.BatchSubmitWorkOrdersRequest(
                parent=queue_name(),
                requests=[
                    rpc.SubmitWorkOrderRequest(work_order=spec()),
                    rpc.SubmitWorkOrderRequest(work_order=spec(priority=-5)),
                    rpc.SubmitWorkOrderRequest(work_order=spec(data=BIG)),
                ],
            )
        )
    )
    assert fields == ["requests[1].work_order.priority", "requests[2].work_order.payload.data"]
    listed = await env.stub.ListWorkOrders(rpc.ListWorkOrdersRequest(parent=queue_name()))
    assert list(listed.work_orders) == []


TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
BAD_TRACEPARENTS = [
    "not-a-traceparent",
    "00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01",  # uppercase
    "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  # version ff
    "00-00000000000000000000000000000000-b7ad6b7169203331-01",  # zero trace id
    "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",  # zero parent id
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",  # 00 has four fields
    "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-" + "x" * 100,  # too long
]


async def test_bad_batch_item_trace_context_is_refused_per_item(env: QueueEnv) -> None:
    requests = [rpc.SubmitWorkOrderRequest(work_order=spec(), traceparent=TRACEPARENT)]
    requests += [
        rpc.SubmitWorkOrderRequest(work_order=spec(), traceparent=bad) for bad in BAD_TRACEPARENTS
    ]
    requests += [
        rpc.SubmitWorkOrderRequest(work_order=spec(), correlation_id=bad)
        for bad in ("has space", "x" * 129, "line\nbreak")
    ]
    fields = await _invalid(
        env.stub.BatchSubmitWorkOrders(
            rpc.BatchSubmitWorkOrdersRequest(parent=queue_name(), requests=requests)
        )
    )
    n = len(BAD_TRACEPARENTS)
    assert fields == [f"requests[{i}].traceparent" for i in range(1, n + 1)] + [
        f"requests[{i}].correlation_id" for i in range(n + 1, n + 4)
    ]
    listed = await env.stub.ListWorkOrders(rpc.ListWorkOrdersRequest(parent=queue_name()))
    assert list(listed.work_orders) == []


@pytest.mark.parametrize("field", ["traceparent", "correlation_id"])
async def test_single_submit_refuses_item_trace_context(env: QueueEnv, field: str) -> None:
    value = TRACEPARENT if field == "traceparent" else "order-1"
    request = rpc.SubmitWorkOrderRequest(parent=queue_name(), work_order=spec(), **{field: value})
    assert await _invalid(env.stub.SubmitWorkOrder(request)) == [field]


@pytest.mark.parametrize(
    "name",
    [
        "",
        "namespaces/test/queues/jobs/workOrders/not-a-uuid",
        "namespaces/test/queues/jobs",
        "namespaces/test/workOrders/x/y/z",
        "namespaces/TEST/queues/jobs/workOrders/0b6f1c52-3c1e-4d0e-9f4a-6a1d2f1e7c11",
    ],
)
async def test_malformed_work_order_names(env: QueueEnv, name: str) -> None:
    assert await _invalid(env.stub.GetWorkOrder(rpc.GetWorkOrderRequest(name=name))) == ["name"]
    assert "name" in await _invalid(
        env.stub.CompleteWorkOrder(rpc.CompleteWorkOrderRequest(name=name, lease_token="t"))
    )


async def test_unknown_order_is_not_found_with_resource_info(env: QueueEnv) -> None:
    for call in (
        env.stub.GetWorkOrder(rpc.GetWorkOrderRequest(name=ORDER)),
        env.stub.CancelWorkOrder(rpc.CancelWorkOrderRequest(name=ORDER)),
        env.stub.FailWorkOrder(
            rpc.FailWorkOrderRequest(
                name=ORDER, lease_token="t", failure=types_pb2.Failure(type="x")
            )
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        details = rich_error_details(info.value)
        assert details.code == grpc.StatusCode.NOT_FOUND and details.resource_name == ORDER
    # an order is only found under its own queue's name
    order = await env.submit()
    elsewhere = order.name.replace("/queues/jobs/", "/queues/other/")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await env.stub.GetWorkOrder(rpc.GetWorkOrderRequest(name=elsewhere))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_bad_lease_requests(env: QueueEnv) -> None:
    base = {"parent": "namespaces/test", "queues": ["jobs"], "max_work_orders": 1}
    cases = {
        "max_work_orders": {**base, "max_work_orders": 0},
        "queues": {**base, "queues": []},
        "queues[0]": {**base, "queues": ["Not Valid"]},
        "parent": {**base, "parent": "namespaces/"},
        "wait_time": {**base, "wait_time": duration_pb2.Duration(seconds=3600)},
    }
    for field, fields in cases.items():
        assert field in await _invalid(
            env.stub.LeaseWorkOrders(rpc.LeaseWorkOrdersRequest(**fields))
        ), field


async def test_bad_lease_holder_requests(env: QueueEnv) -> None:
    order = await env.submit()
    [lw] = await env.lease()
    assert await _invalid(
        env.stub.CompleteWorkOrder(rpc.CompleteWorkOrderRequest(name=order.name))
    ) == ["lease_token"]
    assert await _invalid(
        env.stub.FailWorkOrder(
            rpc.FailWorkOrderRequest(name=order.name, lease_token=lw.lease_token)
        )
    ) == ["failure.type"]
    assert await _invalid(
        env.stub.HeartbeatWorkOrder(
            rpc.HeartbeatWorkOrderRequest(
                name=order.name, lease_token=lw.lease_token, progress=m.Progress(percent=150)
            )
        )
    ) == ["progress.percent"]
    assert (await env.get(order.name)).state == m.WorkOrderState.WORK_ORDER_STATE_LEASED


async def test_bad_queue_updates_and_list_requests(env: QueueEnv) -> None:
    assert await _invalid(
        env.stub.UpdateQueue(
            rpc.UpdateQueueRequest(queue=m.Queue(name=queue_name(), max_in_flight=-1))
        )
    ) == ["queue.max_in_flight"]
    assert await _invalid(
        env.stub.UpdateQueue(
            rpc.UpdateQueueRequest(
                queue=m.Queue(name=queue_name()),
                update_mask=field_mask_pb2.FieldMask(paths=["create_time"]),
            )
        )
    ) == ["update_mask"]
    assert await _invalid(
        env.stub.ListWorkOrders(rpc.ListWorkOrdersRequest(parent=queue_name(), page_size=-1))
    ) == ["page_size"]
    assert await _invalid(
        env.stub.ListWorkOrders(rpc.ListWorkOrdersRequest(parent=queue_name(), states=[42]))
    ) == ["states[0]"]  # the gRPC edge names the item
