"""Checks of WorkOrderQueueService requests, and the engine's commands built from them.

Each function raises InvalidArgument with one FieldViolation per bad field (the
error interceptor turns it into INVALID_ARGUMENT with google.rpc.BadRequest), or
returns what the engine takes. Limits come from QueueSettings; the message of a
limit names its value. Resource names are parsed by domain/validation.py.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from conveyor.queue.v1 import messages_pb2 as pb
from conveyor.queue.v1 import service_pb2 as rpc
from conveyor_core import protoconv
from conveyor_core.auth import actor
from conveyor_core.errors import FieldViolation, InvalidArgument
from conveyor_queue.api import convert
from conveyor_queue.domain import validation as names
from conveyor_queue.domain.commands import CompleteParams, FailAttempt, RedriveRequest
from conveyor_queue.domain.model import (
    Progress,
    QueueConfig,
    QueueRef,
    WorkOrderRef,
    WorkOrderState,
)
from conveyor_queue.engine import LeaseRequest, SubmitItem
from conveyor_queue.settings import QueueSettings

# The redrives table's requested_by column holds 256 characters.
MAX_ACTOR_LENGTH = 256
#: The Queue fields an UpdateQueue mask may name.
QUEUE_FIELDS = frozenset(
    {"paused", "max_in_flight", "max_in_flight_per_key", "fair", "rate_limit", "rate_limit_per_key"}
)


def positive_duration(message: Any, field: str, maximum: float) -> timedelta | None:
    """The Duration `field` of `message` (None when unset), within [0, maximum] seconds."""
    value = protoconv.opt_dur(message, field)
    if value is not None and not timedelta(0) <= value <= timedelta(seconds=maximum):
        raise InvalidArgument(FieldViolation(field, f"must be in [0, {maximum}] seconds"))
    return value


def lease_token(value: str, field: str = "lease_token") -> str:
    if not value:
        raise InvalidArgument(FieldViolation(field, "required: the token from the lease"))
    return value


def int_cursor(cursor: dict[str, Any] | None, key: str) -> int | None:
    """The integer `key` of a decoded page token (None without a token)."""
    if cursor is None:
        return None
    value = cursor.get(key)
    if not isinstance(value, int):
        raise InvalidArgument(FieldViolation("page_token", "is not a page token from this API"))
    return value


# -- submit -----------------------------------------------------------------------------


def submit_item(request: rpc.SubmitWorkOrderRequest) -> SubmitItem:
    queue = names.parse_queue(request.parent, "parent")
    for field in ("traceparent", "correlation_id"):  # the call's metadata carries them
        if getattr(request, field):
            raise InvalidArgument(FieldViolation(field, "only for BatchSubmitWorkOrders items"))
    return SubmitItem(queue, convert.spec_from_pb(request.work_order))


def batch_submit_items(request: rpc.BatchSubmitWorkOrdersRequest) -> list[SubmitItem]:
    default = names.parse_queue(request.parent, "parent")
    items = []
    for i, item in enumerate(request.requests):
        prefix = f"requests[{i}]."
        queue = names.parse_queue(item.parent, f"{prefix}parent") if item.parent else default
        if queue.namespace != default.namespace:
            raise InvalidArgument(
                FieldViolation(f"{prefix}parent", "must be in the namespace of parent")
            )
        spec = convert.spec_from_pb(item.work_order, f"{prefix}work_order.")
        items.append(SubmitItem(queue, spec, prefix, item.traceparent, item.correlation_id))
    return items


# -- lease holders ----------------------------------------------------------------------


def lease_request(
    request: rpc.LeaseWorkOrdersRequest, settings: QueueSettings, peer: str
) -> LeaseRequest:
    s = settings
    namespace = names.parse_namespace(request.parent, "parent")
    violations = []
    if not request.queues:
        violations.append(FieldViolation("queues", "name at least one queue"))
    if len(request.queues) > s.max_lease_queues:
        violations.append(FieldViolation("queues", f"at most {s.max_lease_queues} queues"))
    if not 1 <= request.max_work_orders <= s.max_lease_batch:
        violations.append(FieldViolation("max_work_orders", f"must be in [1, {s.max_lease_batch}]"))
    if violations:
        raise InvalidArgument(violations)
    queues = tuple(
        dict.fromkeys(names.check_queue_id(q, f"queues[{i}]") for i, q in enumerate(request.queues))
    )
    wait = positive_duration(request, "wait_time", s.max_wait_seconds) or timedelta(0)
    lease = positive_duration(request, "lease_duration", s.max_lease_seconds)
    if lease is not None and lease <= timedelta(0):
        raise InvalidArgument(FieldViolation("lease_duration", "must be positive"))
    worker = request.worker_identity or peer
    return LeaseRequest(namespace, queues, request.max_work_orders, wait, lease, worker)


def heartbeat(
    request: rpc.HeartbeatWorkOrderRequest, settings: QueueSettings
) -> tuple[WorkOrderRef, str, timedelta | None, Progress | None]:
    """The order, the lease token, the new lease duration and the progress to record."""
    ref = names.parse_work_order(request.name, "name")
    lease = positive_duration(request, "lease_duration", settings.max_lease_seconds)
    progress = convert.progress_from_pb(request.progress) if request.HasField("progress") else None
    if progress is not None and not 0 <= progress.percent <= 100:
        raise InvalidArgument(FieldViolation("progress.percent", "must be in [0, 100]"))
    return ref, lease_token(request.lease_token), lease, progress


def complete_params(request: rpc.CompleteWorkOrderRequest, prefix: str = "") -> CompleteParams:
    ref = names.parse_work_order(request.name, f"{prefix}name")
    if not request.lease_token:
        raise InvalidArgument(FieldViolation(f"{prefix}lease_token", "required"))
    return CompleteParams(ref, request.lease_token, convert.payload_from_pb(request.result))


def batch_complete_params(request: rpc.BatchCompleteWorkOrdersRequest) -> list[CompleteParams]:
    namespace = names.parse_namespace(request.parent, "parent")
    items = [complete_params(item, f"requests[{i}].") for i, item in enumerate(request.requests)]
    for i, item in enumerate(items):
        if item.ref.namespace != namespace:
            raise InvalidArgument(
                FieldViolation(f"requests[{i}].name", "must be in the namespace of parent")
            )
    return items


def fail_attempt(request: rpc.FailWorkOrderRequest, settings: QueueSettings) -> FailAttempt:
    ref = names.parse_work_order(request.name, "name")
    if not request.failure.type:
        raise InvalidArgument(FieldViolation("failure.type", "required: classify the failure"))
    limit = settings.max_failure_message_length
    if len(request.failure.message) > limit:
        raise InvalidArgument(FieldViolation("failure.message", f"longer than {limit}"))
    delay = positive_duration(request, "retry_delay", settings.max_retry_interval_seconds)
    return FailAttempt(
        ref, lease_token(request.lease_token), convert.failure_from_pb(request.failure), delay
    )


# -- reads and queues -------------------------------------------------------------------


def list_states(request: rpc.ListWorkOrdersRequest) -> tuple[WorkOrderState, ...]:
    states = tuple(convert.STATE_FROM_PB[s] for s in request.states if s in convert.STATE_FROM_PB)
    if len(states) != len(request.states):
        raise InvalidArgument(FieldViolation("states", "contains an unknown state"))
    return states


def queue_update(request: rpc.UpdateQueueRequest) -> tuple[QueueConfig, frozenset[str]]:
    """The queue's new settings and the fields to change (all of them without a mask)."""
    ref = names.parse_queue(request.queue.name, "queue.name")
    fields = frozenset(request.update_mask.paths) or QUEUE_FIELDS
    unknown = sorted(fields - QUEUE_FIELDS)
    if unknown:
        raise InvalidArgument(
            FieldViolation("update_mask", f"unknown or read-only fields: {unknown}")
        )
    return queue_config(ref, request.queue), fields


def queue_config(ref: QueueRef, message: pb.Queue) -> QueueConfig:
    violations = []
    for field in ("max_in_flight", "max_in_flight_per_key"):
        if getattr(message, field) < 0:
            violations.append(FieldViolation(f"queue.{field}", "must not be negative"))
    for field in ("rate_limit", "rate_limit_per_key"):
        rate = getattr(message, field)
        if rate.tokens < 0 or rate.burst < 0:
            violations.append(
                FieldViolation(f"queue.{field}", "tokens and burst must not be negative")
            )
        elif rate.tokens and rate.period.ToTimedelta() <= timedelta(0):
            violations.append(FieldViolation(f"queue.{field}.period", "must be positive"))
    if violations:
        raise InvalidArgument(violations)
    return QueueConfig(
        ref.namespace,
        ref.queue,
        paused=message.paused,
        max_in_flight=message.max_in_flight,
        max_in_flight_per_key=message.max_in_flight_per_key,
        fair=message.fair,
        rate_limit=convert.rate_from_pb(message.rate_limit),
        rate_limit_per_key=convert.rate_from_pb(message.rate_limit_per_key),
    )


def redrive_request(request: rpc.RedriveWorkOrdersRequest) -> RedriveRequest:
    queue = names.parse_queue(request.parent, "parent")
    violations = []
    if not request.reason.strip():
        violations.append(FieldViolation("reason", "required: say why the orders are redriven"))
    requested_by = actor(request.requested_by)  # the caller's identity when authenticated
    if not requested_by:
        violations.append(FieldViolation("requested_by", "required: who asks for the redrive"))
    elif len(requested_by) > MAX_ACTOR_LENGTH:
        violations.append(FieldViolation("requested_by", f"at most {MAX_ACTOR_LENGTH} characters"))
    if request.max_work_orders < 0:
        violations.append(FieldViolation("max_work_orders", "must not be negative"))
    if violations:
        raise InvalidArgument(violations)
    return RedriveRequest(
        queue,
        request.error_type,
        protoconv.opt_ts(request, "dead_after"),
        request.max_work_orders,
        request.reason,
        requested_by,
        request.request_id,
    )
