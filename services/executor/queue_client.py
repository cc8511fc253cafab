"""The executor's side of the work-order queue: the calls the worker pool makes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import grpc
from google.protobuf import duration_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conveyor.common.v1 import types_pb2
from conveyor.queue.v1 import messages_pb2 as queue_pb
from conveyor.queue.v1 import service_pb2 as rpc
from conveyor.queue.v1 import service_pb2_grpc
from conveyor_core.grpc import create_channel
from conveyor_core.settings import CoreSettings
from conveyor_sdk._batching import Coalescer

log = logging.getLogger(__name__)
QUEUE_SERVICE = rpc.DESCRIPTOR.services_by_name["WorkOrderQueueService"].full_name
# Safe to retry on UNAVAILABLE: a heartbeat only extends a lease; Get/health read.
_IDEMPOTENT = [f"{QUEUE_SERVICE}/HeartbeatWorkOrder", f"{QUEUE_SERVICE}/GetWorkOrder"]


def _seconds(value: float) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromNanoseconds(int(value * 1e9))
    return out


# Worth another try of a report: the queue unreachable or slow, a broken connection
# (INTERNAL from the transport), or an internal error of the queue (a database hiccup).
# A retry of a report that had in fact been applied is recognised (see `_report`).
_TRANSIENT = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.INTERNAL,
)
T = TypeVar("T")
_CODES = {code.value[0]: code for code in grpc.StatusCode}


def item_error(code: int, message: str) -> grpc.aio.AioRpcError:
    """The error of one item of a batch call, as the single call would have raised it."""
    status = _CODES.get(code, grpc.StatusCode.UNKNOWN)
    return grpc.aio.AioRpcError(status, grpc.aio.Metadata(), grpc.aio.Metadata(), message)


class QueueClient:
    """Calls to the queue. Completing and failing an order are retried on transient errors
    (`report_attempts` tries, backoff from `report_backoff` seconds): losing a finished
    attempt's report would make the queue run the order again after its lease expires.

    Completions are group-committed: the orders finishing while one
    BatchCompleteWorkOrders call is in flight go out together in the next (at most
    `batch_size`, one call per namespace), each caller getting its own item's status.
    A batch refused as a whole for a bad argument is sent again one order at a time, so
    one bad result never fails the others; a transient failure of the call is retried
    per order by `_report` (the retries join the next batch)."""

    def __init__(
        self,
        address: str,
        core: CoreSettings,
        call_timeout: float,
        report_attempts: int = 3,
        report_backoff: float = 0.2,
        batch_size: int = 256,
    ) -> None:
        self.address = address
        self._report_attempts = report_attempts
        self._report_backoff = report_backoff
        self._channel = create_channel(address, settings=core, idempotent_methods=_IDEMPOTENT)
        self._stub = service_pb2_grpc.WorkOrderQueueServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._timeout = call_timeout
        self._completions: Coalescer[rpc.CompleteWorkOrderRequest, None] = Coalescer(
            self._complete_batch, batch_size, "completions"
        )

    async def close(self) -> None:
        await self._channel.close()

    async def check(self, timeout: float) -> None:  # noqa: ASYNC109
        """Raise unless the queue answers its health check as SERVING."""
        # types-grpcio-health-checking's HealthStub declares none of its methods.
        response = await self._health.Check(  # type: ignore[attr-defined]
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
        request = rpc.CompleteWorkOrderRequest(
            name=leased.work_order.name, lease_token=leased.lease_token, result=result
        )
        await self._report(
            lambda: self._completions.submit(request),
            leased,
            accept=lambda order: order.state == queue_pb.WORK_ORDER_STATE_SUCCEEDED,
        )

    async def _complete_batch(
        self, requests: Sequence[rpc.CompleteWorkOrderRequest]
    ) -> list[BaseException | None]:
        by_namespace: dict[str, list[int]] = {}
        for i, request in enumerate(requests):
            by_namespace.setdefault(request.name.split("/", 2)[1], []).append(i)
        out: list[BaseException | None] = [None] * len(requests)
        for namespace, indexes in by_namespace.items():
            items = [requests[i] for i in indexes]
            try:
                statuses = await self._complete_in(namespace, items)
            except grpc.aio.AioRpcError as error:
                statuses = [error] * len(items)
            for i, status in zip(indexes, statuses, strict=True):
                out[i] = status
        return out

    async def _complete_in(
        self, namespace: str, items: Sequence[rpc.CompleteWorkOrderRequest]
    ) -> list[BaseException | None]:
        if len(items) == 1:
            await self._stub.CompleteWorkOrder(items[0], timeout=self._timeout)
            return [None]
        request = rpc.BatchCompleteWorkOrdersRequest(
            parent=f"namespaces/{namespace}", requests=list(items)
        )
        try:
            response = await self._stub.BatchCompleteWorkOrders(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as error:
            if error.code() is not grpc.StatusCode.INVALID_ARGUMENT:
                raise
            out: list[BaseException | None] = []
            for item in items:  # which one is bad: the single calls say
                try:
                    await self._stub.CompleteWorkOrder(item, timeout=self._timeout)
                    out.append(None)
                except grpc.aio.AioRpcError as single:
                    out.append(single)
            return out
        return [None if s.code == 0 else item_error(s.code, s.message) for s in response.statuses]

    async def fail(
        self, leased: rpc.LeasedWorkOrder, failure: types_pb2.Failure
    ) -> queue_pb.WorkOrder:
        request = rpc.FailWorkOrderRequest(
            name=leased.work_order.name, lease_token=leased.lease_token, failure=failure
        )
        response = await self._report(
            lambda: self._stub.FailWorkOrder(request, timeout=self._timeout),
            leased,
            accept=lambda order: order.state != queue_pb.WORK_ORDER_STATE_LEASED,
        )
        return response.work_order if response is not None else await self.get(leased)

    async def get(self, leased: rpc.LeasedWorkOrder) -> queue_pb.WorkOrder:
        request = rpc.GetWorkOrderRequest(name=leased.work_order.name)
        return (await self._stub.GetWorkOrder(request, timeout=self._timeout)).work_order

    async def _report(
        self,
        call: Callable[[], Awaitable[T]],
        leased: rpc.LeasedWorkOrder,
        accept: Callable[[queue_pb.WorkOrder], bool],
    ) -> T | None:
        """`call()`, retried on transient errors. None when a retry was refused because an
        earlier try had in fact been applied (the order's state is accepted)."""
        transient_before = False
        for attempt in range(1, self._report_attempts + 1):
            try:
                return await call()
            except grpc.aio.AioRpcError as error:
                if transient_before and lease_lost(error) and accept(await self.get(leased)):
                    return None
                if error.code() not in _TRANSIENT or attempt == self._report_attempts:
                    raise
                transient_before = True
                log.warning(
                    "order %s: report failed (%s); retrying", leased.work_order.name, error.code()
                )
                await asyncio.sleep(self._report_backoff * 2 ** (attempt - 1))
        raise AssertionError("unreachable")  # pragma: no cover

    async def cancel(self, work_order: str, reason: str) -> queue_pb.WorkOrder:
        response = await self._stub.CancelWorkOrder(
            rpc.CancelWorkOrderRequest(name=work_order, reason=reason), timeout=self._timeout
        )
        return response.work_order


def lease_lost(error: grpc.aio.AioRpcError) -> bool:
    """The queue says our lease is not (or no longer) valid: the order is not ours."""
    return error.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND)
