"""Resource names and request limits of the queue API. Raises InvalidArgument with field paths."""

from __future__ import annotations

import math
import uuid
from datetime import timedelta

from conveyor_core.context import is_valid_correlation_id
from conveyor_core.errors import FieldViolation, InvalidArgument
from conveyor_core.validators import name_pattern
from conveyor_queue.domain.model import QueueRef, RetryPolicy, WorkOrderRef, WorkOrderSpec
from conveyor_queue.settings import QueueSettings

NAMESPACE_ID = name_pattern(r"[a-z][a-z0-9-]{0,62}")
QUEUE_ID = name_pattern(r"[a-z][a-z0-9._-]{0,127}")
_ID_RULE_NS = "must match [a-z][a-z0-9-]{0,62}"
_ID_RULE_QUEUE = "must match [a-z][a-z0-9._-]{0,127}"
# W3C Trace Context: version-traceid-parentid-flags, lowercase hex. A version above 00
# may append fields (-...); version ff is invalid; all-zero ids are invalid.
TRACEPARENT = name_pattern(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-[^\s]*)?")
MAX_TRACEPARENT_LENGTH = 128


def _bad(field: str, description: str) -> InvalidArgument:
    return InvalidArgument(FieldViolation(field, description))


def parse_namespace(value: str, field: str) -> str:
    """`namespaces/{namespace}` -> namespace."""
    if not value:
        raise _bad(field, "required: namespaces/{namespace}")
    parts = value.split("/")
    if len(parts) != 2 or parts[0] != "namespaces":
        raise _bad(field, f"must be namespaces/{{namespace}}, got {value!r}")
    return check_namespace_id(parts[1], field)


def check_namespace_id(namespace: str, field: str) -> str:
    if not namespace:
        raise _bad(field, "namespace is required")
    if not NAMESPACE_ID.match(namespace):
        raise _bad(field, f"namespace {namespace!r} {_ID_RULE_NS}")
    return namespace


def check_queue_id(queue: str, field: str) -> str:
    if not queue:
        raise _bad(field, "queue is required")
    if not QUEUE_ID.match(queue):
        raise _bad(field, f"queue {queue!r} {_ID_RULE_QUEUE}")
    return queue


def parse_queue(value: str, field: str, *, allow_any: bool = False) -> QueueRef:
    """`namespaces/{namespace}/queues/{queue}` -> QueueRef ("-" for any queue if allowed)."""
    if not value:
        raise _bad(field, "required: namespaces/{namespace}/queues/{queue}")
    parts = value.split("/")
    if len(parts) != 4 or parts[0] != "namespaces" or parts[2] != "queues":
        raise _bad(field, f"must be namespaces/{{namespace}}/queues/{{queue}}, got {value!r}")
    namespace = check_namespace_id(parts[1], field)
    if allow_any and parts[3] == "-":
        return QueueRef(namespace, "-")
    return QueueRef(namespace, check_queue_id(parts[3], field))


def parse_work_order(value: str, field: str) -> WorkOrderRef:
    """`namespaces/{ns}/queues/{queue}/workOrders/{uuid}` -> WorkOrderRef."""
    parts = value.split("/") if value else []
    if len(parts) != 6 or parts[4] != "workOrders":
        raise _bad(
            field,
            "must be namespaces/{namespace}/queues/{queue}/workOrders/{work_order}"
            + (f", got {value!r}" if value else ""),
        )
    queue = parse_queue("/".join(parts[:4]), field)
    try:
        order_id = uuid.UUID(parts[5])
    except ValueError:
        raise _bad(field, f"work order id {parts[5]!r} is not a UUID") from None
    return WorkOrderRef(queue.namespace, queue.queue, order_id)


def spec_violations(
    spec: WorkOrderSpec, limits: QueueSettings, prefix: str
) -> list[FieldViolation]:
    """Everything wrong with a submitted spec (empty when valid)."""
    out: list[FieldViolation] = []

    def bad(field: str, description: str) -> None:
        out.append(FieldViolation(f"{prefix}{field}", description))

    if not 0 <= spec.priority <= limits.max_priority:
        bad("priority", f"must be in [0, {limits.max_priority}], got {spec.priority}")
    if len(spec.payload.data) > limits.max_payload_bytes:
        bad(
            "payload.data",
            f"{len(spec.payload.data)} bytes exceeds the limit of {limits.max_payload_bytes} bytes",
        )
    if len(spec.payload.content_type) > 255:
        bad("payload.content_type", "longer than 255 characters")
    if (
        spec.idempotency_key is not None
        and len(spec.idempotency_key) > limits.max_idempotency_key_length
    ):
        bad("idempotency_key", f"longer than {limits.max_idempotency_key_length} characters")
    if len(spec.concurrency_key) > limits.max_concurrency_key_length:
        bad("concurrency_key", f"longer than {limits.max_concurrency_key_length} characters")
    if spec.not_before and spec.deadline and spec.deadline <= spec.not_before:
        bad("deadline", "must be after not_before")
    for name in ("start_to_close_timeout", "heartbeat_timeout"):
        value: timedelta | None = getattr(spec, name)
        if value is not None and value <= timedelta(0):
            bad(name, "must be positive")
    if len(spec.labels) > limits.max_labels:
        bad("labels", f"at most {limits.max_labels} labels")
    for key, label in spec.labels.items():
        if not key or len(key) > limits.max_label_length or len(label) > limits.max_label_length:
            bad(
                f"labels[{key!r}]",
                f"keys are 1..{limits.max_label_length} characters, "
                f"values at most {limits.max_label_length}",
            )
    out.extend(retry_policy_violations(spec.retry_policy, limits, f"{prefix}retry_policy."))
    return out


def traceparent_problem(value: str) -> str | None:
    """Why `value` is not a W3C traceparent, or None when it is one."""
    match = TRACEPARENT.match(value) if len(value) <= MAX_TRACEPARENT_LENGTH else None
    if match is None:
        return (
            "must be a W3C traceparent: 2-32-16-2 lowercase hex digits joined by '-' "
            f"(at most {MAX_TRACEPARENT_LENGTH} characters)"
        )
    version, trace_id, parent_id, _, rest = match.groups()
    if version == "ff":
        return "version ff is invalid"
    if version == "00" and rest:
        return "version 00 has exactly four fields"
    if trace_id == "0" * 32 or parent_id == "0" * 16:
        return "trace id and parent id must not be all zeros"
    return None


def submit_context_violations(
    traceparent: str, correlation_id: str, prefix: str
) -> list[FieldViolation]:
    """Problems with a batch item's own trace context and correlation id (empty ones are fine)."""
    out = []
    if traceparent and (problem := traceparent_problem(traceparent)):
        out.append(FieldViolation(f"{prefix}traceparent", problem))
    if correlation_id and not is_valid_correlation_id(correlation_id):
        out.append(
            FieldViolation(
                f"{prefix}correlation_id", "must be 1-128 characters of [A-Za-z0-9._:/-]"
            )
        )
    return out


def retry_policy_violations(
    policy: RetryPolicy, limits: QueueSettings, prefix: str
) -> list[FieldViolation]:
    out: list[FieldViolation] = []
    if policy.initial_interval < timedelta(0):
        out.append(FieldViolation(f"{prefix}initial_interval", "must not be negative"))
    coefficient = policy.backoff_coefficient
    if not math.isfinite(coefficient) or coefficient < 1:
        out.append(
            FieldViolation(
                f"{prefix}backoff_coefficient",
                f"must be a finite number >= 1 (0: the default), got {coefficient!r}",
            )
        )
    if policy.maximum_interval < policy.initial_interval:
        out.append(FieldViolation(f"{prefix}maximum_interval", "must be >= initial_interval"))
    if policy.maximum_interval.total_seconds() > limits.max_retry_interval_seconds:
        out.append(
            FieldViolation(
                f"{prefix}maximum_interval", f"must be at most {limits.max_retry_interval_seconds}s"
            )
        )
    if not 0 <= policy.jitter <= 1:  # NaN fails both comparisons
        out.append(FieldViolation(f"{prefix}jitter", f"must be in [0, 1], got {policy.jitter!r}"))
    if not 1 <= policy.maximum_attempts <= limits.max_attempts_limit:
        out.append(
            FieldViolation(
                f"{prefix}maximum_attempts", f"must be in [1, {limits.max_attempts_limit}]"
            )
        )
    return out


def raise_if(violations: list[FieldViolation]) -> None:
    if violations:
        raise InvalidArgument(violations)
