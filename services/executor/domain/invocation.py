"""Reading a work order's payload: a JobInvocation, a Python task call, or a classified error.

A Python task's payload is the SDK's wire format (content type
`application/vnd.conveyor.task+json`, conveyor_sdk._wire); its run records
the task as its job, `namespaces/{namespace}/tasks/{task}`.

A workflow target runs a session of a hosted app's workflow (conveyor_executor.workflow).
Anything else (another content type, bytes that do not decode) is a definite
failure: invalid_input, never retried.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC

from google.protobuf.message import DecodeError

from conveyor.common.v1 import job_pb2
from conveyor.queue.v1 import messages_pb2 as queue_pb
from conveyor_core.outbox import trace_id_of
from conveyor_executor.domain.failure import ClassifiedError, ErrorType
from conveyor_executor.domain.model import RunKind, RunOrigin
from conveyor_sdk._wire import TASK_CONTENT_TYPE, TaskCall, decode_call

JOB_INVOCATION_CONTENT_TYPE = "application/x-protobuf; messageType=conveyor.common.v1.JobInvocation"
JOB_RESULT_CONTENT_TYPE = "application/x-protobuf; messageType=conveyor.common.v1.JobResult"

_KINDS = {"http": RunKind.HTTP, "command": RunKind.COMMAND, "workflow": RunKind.WORKFLOW}


def _normalized(content_type: str) -> str:
    return "".join(content_type.split()).lower()


@dataclass(frozen=True, slots=True)
class DecodedOrder:
    """What the executor can tell about a leased order before running it."""

    origin: RunOrigin
    invocation: job_pb2.JobInvocation | None
    error: ClassifiedError | None
    task_call: TaskCall | None = None


def decode_order(order: queue_pb.WorkOrder, max_bytes: int) -> DecodedOrder:
    """The run origin and invocation of `order`, or the invalid_input error that stops it."""
    base = RunOrigin(
        work_order=order.name,
        kind=RunKind.UNKNOWN,
        correlation_id=order.correlation_id,
        trace_id=trace_id_of(order.traceparent),
    )
    payload = order.spec.payload
    if _normalized(payload.content_type) == TASK_CONTENT_TYPE:
        return _decode_task(order, base, max_bytes)
    if _normalized(payload.content_type) != _normalized(JOB_INVOCATION_CONTENT_TYPE):
        return DecodedOrder(
            base,
            None,
            _invalid(
                f"payload content type {payload.content_type!r} is not a job invocation: "
                f"submit a conveyor.common.v1.JobInvocation with content type "
                f"{JOB_INVOCATION_CONTENT_TYPE!r}",
                content_type=payload.content_type[:128],
            ),
        )
    if len(payload.data) > max_bytes:
        return DecodedOrder(
            base,
            None,
            _invalid(
                f"job invocation of {len(payload.data)} bytes exceeds the limit of {max_bytes}"
            ),
        )
    invocation = job_pb2.JobInvocation()
    try:
        invocation.ParseFromString(payload.data)
    except DecodeError as exc:
        return DecodedOrder(base, None, _invalid(f"payload is not a valid JobInvocation: {exc}"))
    origin = origin_of(base, invocation)
    if origin.kind is RunKind.UNKNOWN:
        return DecodedOrder(
            origin,
            invocation,
            _invalid("job invocation has no target: set target.http or target.command"),
        )
    return DecodedOrder(origin, invocation, None)


def _decode_task(order: queue_pb.WorkOrder, base: RunOrigin, max_bytes: int) -> DecodedOrder:
    data = order.spec.payload.data
    origin = RunOrigin(
        work_order=base.work_order,
        kind=RunKind.TASK,
        correlation_id=base.correlation_id,
        trace_id=base.trace_id,
    )
    if len(data) > max_bytes:
        return DecodedOrder(
            origin,
            None,
            _invalid(
                f"task call of {len(data)} bytes exceeds the limit of {max_bytes} "
                "(CONVEYOR_EXECUTOR_MAX_INVOCATION_BYTES)"
            ),
        )
    try:
        call = decode_call(data)
    except ValueError as exc:
        return DecodedOrder(origin, None, _invalid(str(exc)[:500]))
    named = RunOrigin(
        work_order=base.work_order,
        kind=RunKind.TASK,
        job=f"namespaces/{order.namespace}/tasks/{call.task}"[:256],
        correlation_id=base.correlation_id,
        trace_id=base.trace_id,
    )
    return DecodedOrder(named, None, None, call)


def origin_of(base: RunOrigin, invocation: job_pb2.JobInvocation) -> RunOrigin:
    kind = _KINDS.get(invocation.target.WhichOneof("kind") or "", RunKind.UNKNOWN)
    slot = invocation.slot_time.ToDatetime(tzinfo=UTC) if invocation.HasField("slot_time") else None
    return RunOrigin(
        work_order=base.work_order,
        kind=kind,
        job=invocation.job[:256],
        job_version=invocation.job_version,
        schedule=invocation.schedule[:256],
        slot_time=slot,
        fire_id=invocation.fire_id[:128],
        correlation_id=base.correlation_id,
        trace_id=base.trace_id,
    )


def _invalid(message: str, **details: str) -> ClassifiedError:
    return ClassifiedError.of(ErrorType.INVALID_INPUT, message, **details)
