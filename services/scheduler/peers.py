"""The scheduler's calls to other services: the queue (submit, cancel, read back) and events.

A single call runs in the fire's correlation scope and under its trace context
(conveyor_core.grpc.create_channel sends both); a batch submit carries each
fire's correlation id and traceparent in its item, so every order joins its
own fire's trace.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate

from conveyor.common.v1 import job_pb2
from conveyor.events.v1 import service_pb2 as events_rpc
from conveyor.events.v1 import service_pb2_grpc as events_grpc
from conveyor.queue.v1 import messages_pb2 as queue_pb
from conveyor.queue.v1 import service_pb2 as queue_rpc
from conveyor.queue.v1 import service_pb2_grpc as queue_grpc
from conveyor_core.context import correlation_scope
from conveyor_core.errors import (
    ConveyorError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    PreconditionViolation,
    Unavailable,
)
from conveyor_core.grpc import create_channel
from conveyor_core.grpc.status import rich_error_details
from conveyor_core.settings import CoreSettings
from conveyor_scheduler.domain.model import FireOutcome, SubmittedOrder

log = logging.getLogger(__name__)

JOB_RESULT_TYPE = "application/x-protobuf; messageType=conveyor.common.v1.JobResult"
_QUEUE = "conveyor.queue.v1.WorkOrderQueueService"
_EVENTS = "conveyor.events.v1.EventStoreService"
#: Codes after which retrying the same submit cannot help: the fire is recorded failed.
PERMANENT = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.OUT_OF_RANGE,
    }
)


@contextlib.contextmanager
def fire_context(correlation_id: str, traceparent: str) -> Iterator[None]:
    """Run a call as part of a fire: its correlation id and its trace."""
    carrier = {"traceparent": traceparent} if traceparent else {}
    token = otel_context.attach(propagate.extract(carrier))
    try:
        with correlation_scope(correlation_id or None):
            yield
    finally:
        otel_context.detach(token)


@dataclass(frozen=True, slots=True)
class OrderOutcome:
    """What the queue says about a fire's order."""

    outcome: FireOutcome
    work_found: bool | None = None
    error_type: str = ""
    reason: str = ""


class QueueClient:
    def __init__(self, address: str, core: CoreSettings, timeout: float) -> None:
        self.address = address
        self._channel = create_channel(
            address,
            settings=core,
            idempotent_methods=[
                f"{_QUEUE}/SubmitWorkOrder",  # idempotent by key
                f"{_QUEUE}/BatchSubmitWorkOrders",
                f"{_QUEUE}/GetWorkOrder",
                f"{_QUEUE}/CancelWorkOrder",
            ],
        )
        self._stub = queue_grpc.WorkOrderQueueServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._timeout = timeout

    async def check(self) -> None:
        """Raise unless the queue answers its health check as SERVING (readiness)."""
        # types-grpcio-health-checking's HealthStub declares none of its methods.
        response = await self._health.Check(  # type: ignore[attr-defined]
            health_pb2.HealthCheckRequest(service=_QUEUE), timeout=self._timeout
        )
        if response.status != health_pb2.HealthCheckResponse.SERVING:
            raise RuntimeError(f"queue at {self.address} is not serving")

    async def submit(self, parent: str, spec: bytes) -> queue_rpc.SubmitWorkOrderResponse:
        request = queue_rpc.SubmitWorkOrderRequest(
            parent=parent, work_order=queue_pb.WorkOrderSpec.FromString(spec)
        )
        return await self._stub.SubmitWorkOrder(request, timeout=self._timeout)

    async def submit_now(self, parent: str, spec: bytes) -> SubmittedOrder:
        """A submit on behalf of a caller (RunJob): the queue's refusal becomes the
        caller's error (INVALID_ARGUMENT naming the field, FAILED_PRECONDITION), a queue
        that does not answer UNAVAILABLE (retry with the same request id)."""
        try:
            response = await self.submit(parent, spec)
        except grpc.aio.AioRpcError as error:
            raise refusal_of(parent, error) from None
        order = response.work_order
        return SubmittedOrder(order.name, order.id, response.already_exists, order.correlation_id)

    async def submit_batch(
        self, parent: str, items: list[tuple[bytes, str, str]]
    ) -> list[queue_rpc.SubmitWorkOrderResponse]:
        """Submit (spec, correlation id, traceparent) items in one call; each keeps its own."""
        request = queue_rpc.BatchSubmitWorkOrdersRequest(
            parent=parent,
            requests=[
                queue_rpc.SubmitWorkOrderRequest(
                    work_order=queue_pb.WorkOrderSpec.FromString(spec),
                    correlation_id=correlation_id,
                    traceparent=traceparent,
                )
                for spec, correlation_id, traceparent in items
            ],
        )
        response = await self._stub.BatchSubmitWorkOrders(request, timeout=self._timeout)
        return list(response.responses)

    async def cancel(self, name: str, reason: str) -> None:
        request = queue_rpc.CancelWorkOrderRequest(name=name, reason=reason)
        await self._stub.CancelWorkOrder(request, timeout=self._timeout)

    async def outcome(self, name: str) -> OrderOutcome:
        try:
            response = await self._stub.GetWorkOrder(
                queue_rpc.GetWorkOrderRequest(name=name), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as error:
            if error.code() is grpc.StatusCode.NOT_FOUND:
                return OrderOutcome(FireOutcome.FAILED, None, "not_found", "work order not found")
            raise
        return order_outcome(response.work_order)

    async def close(self) -> None:
        await self._channel.close()


def refusal_of(parent: str, error: grpc.aio.AioRpcError) -> ConveyorError:
    """The queue's answer to a submit made for a caller, as the caller's error."""
    details = rich_error_details(error)
    said = details.message or error.code().name
    if details.code is grpc.StatusCode.INVALID_ARGUMENT:
        violations = [
            FieldViolation(
                "input" if "payload" in field else "name",
                f"the queue refused the work order: {field}: {description}",
            )
            for field, description in details.field_violations
        ] or [FieldViolation("name", f"the queue refused the work order: {said}")]
        return InvalidArgument(violations)
    if details.code in (
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
    ):
        return FailedPrecondition(
            PreconditionViolation("QUEUE", parent, f"the queue refused the work order: {said}")
        )
    return Unavailable(
        f"the queue did not take the work order ({error.code().name}: {said}); "
        "retry (with a request_id the retry runs the job once)"
    )


def order_outcome(order: queue_pb.WorkOrder) -> OrderOutcome:
    state = order.state
    s = queue_pb.WorkOrderState
    if state == s.WORK_ORDER_STATE_LEASED:
        return OrderOutcome(FireOutcome.RUNNING)
    if state == s.WORK_ORDER_STATE_SUCCEEDED:
        return OrderOutcome(FireOutcome.SUCCEEDED, work_found_of(order))
    if state in (s.WORK_ORDER_STATE_FAILED, s.WORK_ORDER_STATE_DEAD):
        failure = order.last_failure
        return OrderOutcome(FireOutcome.FAILED, None, failure.type, failure.message[:1024])
    if state == s.WORK_ORDER_STATE_CANCELLED:
        return OrderOutcome(FireOutcome.CANCELLED, None, "", "work order cancelled")
    return OrderOutcome(FireOutcome.SUBMITTED)


def work_found_of(order: queue_pb.WorkOrder) -> bool | None:
    """The JobResult's work_found, or None when the result is not a JobResult."""
    result = order.result
    if result.content_type != JOB_RESULT_TYPE:
        return None
    try:
        return job_pb2.JobResult.FromString(result.data).work_found
    except Exception:  # a malformed result must not stop outcome tracking
        log.warning("work order %s: result is not a valid JobResult", order.name)
        return None


class EventsClient:
    def __init__(self, address: str, core: CoreSettings, timeout: float) -> None:
        self._channel = create_channel(address, settings=core, idempotent_methods=[_EVENTS])
        self._stub = events_grpc.EventStoreServiceStub(self._channel)
        self._timeout = timeout

    async def pending(self, topic: str) -> int:
        """Pending events of `topic` (0 when the topic does not exist yet)."""
        try:
            response = await self._stub.GetTopicStats(
                events_rpc.GetTopicStatsRequest(name=topic), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as error:
            if error.code() is grpc.StatusCode.NOT_FOUND:
                return 0
            raise
        return int(response.stats.pending)

    async def close(self) -> None:
        await self._channel.close()
