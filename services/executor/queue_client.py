"""The executor's side of the work-order queue: the calls the worker pool makes."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from google.protobuf import duration_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conveyor.common.v1 import types_pb2
from conveyor.queue.v1 import messages_pb2 as queue_pb
from conveyor.queue.v1 import service_pb2 as rpc
from conveyor.queue.v1 import service_pb2_grpc
from conveyor_core.grpc import create_channel
from conveyor_core.settings import CoreSettings

QUEUE_SERVICE = rpc.DESCRIPTOR.services_by_name["WorkOrderQueueService"].full_name
# Safe to retry on UNAVAILABLE: a heartbeat only extends a lease; Get/health read.
_IDEMPOTENT = [f"{QUEUE_SERVICE}/HeartbeatWorkOrder", f"{QUEUE_SERVICE}/GetWorkOrder"]


def _seconds(value: float) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromNanoseconds(int(value * 1e9))
    return out


class QueueClient:
    def __init__(self, address: str, core: CoreSettings, call_timeout: float) -> None:
        self.address = address
        self._channel = create_channel(address, settings=core, idempotent_methods=_IDEMPOTENT)
        self._stub = service_pb2_grpc.WorkOrderQueueServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._timeout = call_timeout

    async def close(self) -> None:
        await self._channel.close()

    async def check(self, timeout: float) -> None:  # noqa: ASYNC109
        """Raise unless the queue answers its health check as SERVING."""
        response = await self._health.Check(
            health_pb2.HealthCheckRequest(service=QUEUE_SERVICE), timeout=timeout
        )
        if response.status != health_pb2.HealthCheckResponse.SERVING:
            raise RuntimeError(f"queue at {self.address} is not serving")

    async def lease(
        self,
        namespace: str,
        queues: Sequence[str],
        count: int,
        wait: float,
        lease: float,
        identity: str,
    ) -> list[rpc.LeasedWorkOrder]:
        request = rpc.LeaseWorkOrdersRequest(
            parent=f"namespaces/{namespace}",
            queues=list(queues),
            max_work_orders=count,
            wait_time=_seconds(wait),
            lease_duration=_seconds(lease),
            worker_identity=identity,
        )
        response = await self._stub.LeaseWorkOrders(request, timeout=wait + self._timeout)
        return list(response.work_orders)

    async def heartbeat(
        self,
        leased: rpc.LeasedWorkOrder,
        lease: float,
        progress: queue_pb.Progress | None,
    ) -> rpc.HeartbeatWorkOrderResponse:
        request = rpc.HeartbeatWorkOrderRequest(
            name=leased.work_order.name,
            lease_token=leased.lease_token,
            lease_duration=_seconds(lease),
        )
        if progress is not None:
            request.progress.CopyFrom(progress)
        return await self._stub.HeartbeatWorkOrder(request, timeout=self._timeout)

    async def complete(self, leased: rpc.LeasedWorkOrder, result: types_pb2.Payload) -> None:
        await self._stub.CompleteWorkOrder(
            rpc.CompleteWorkOrderRequest(
                name=leased.work_order.name, lease_token=leased.lease_token, result=result
            ),
            timeout=self._timeout,
        )

    async def fail(
        self, leased: rpc.LeasedWorkOrder, failure: types_pb2.Failure
    ) -> queue_pb.WorkOrder:
        response = await self._stub.FailWorkOrder(
            rpc.FailWorkOrderRequest(
                name=leased.work_order.name, lease_token=leased.lease_token, failure=failure
            ),
            timeout=self._timeout,
        )
        return response.work_order

    async def cancel(self, work_order: str, reason: str) -> queue_pb.WorkOrder:
        response = await self._stub.CancelWorkOrder(
            rpc.CancelWorkOrderRequest(name=work_order, reason=reason), timeout=self._timeout
        )
        return response.work_order


def lease_lost(error: grpc.aio.AioRpcError) -> bool:
    """The queue says our lease is not (or no longer) valid: the order is not ours."""
    return error.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND)
