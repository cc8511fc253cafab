"""Protobuf <-> domain translation for the queue API. No logic beyond field mapping."""

from __future__ import annotations

import functools
from datetime import UTC, datetime

from google.protobuf import timestamp_pb2

from conveyor.common.v1 import types_pb2
from conveyor.queue.v1 import messages_pb2 as pb
from conveyor_core.protoconv import dur, opt_dur, opt_ts, ts
from conveyor_queue.domain.model import (
    Failure,
    Payload,
    Progress,
    QueueConfig,
    QueueStats,
    RateLimit,
    Redrive,
    RetryPolicy,
    TimeoutKind,
    WorkOrder,
    WorkOrderEvent,
    WorkOrderSpec,
    WorkOrderState,
)

STATE_TO_PB = {s: pb.WorkOrderState.Value(f"WORK_ORDER_STATE_{s.value}") for s in WorkOrderState}
STATE_FROM_PB = {v: k for k, v in STATE_TO_PB.items()}
TIMEOUT_TO_PB = {k: pb.TimeoutKind.Value(f"TIMEOUT_KIND_{k.value}") for k in TimeoutKind}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _ts(instant: datetime | None) -> timestamp_pb2.Timestamp | None:
    """`ts`, by arithmetic: every order answered carries up to seven instants.

    `Timestamp.FromDatetime` goes through `calendar.timegm` and a time tuple,
    a third of the cost of a whole order's conversion.
    """
    if instant is None:
        return None
    delta = instant - _EPOCH
    return timestamp_pb2.Timestamp(
        seconds=delta.days * 86_400 + delta.seconds, nanos=delta.microseconds * 1000
    )


def payload_from_pb(message: types_pb2.Payload) -> Payload:
    return Payload(message.data, message.content_type)


def payload_to_pb(payload: Payload | None) -> types_pb2.Payload | None:
    return (
        None
        if payload is None
        else types_pb2.Payload(data=payload.data, content_type=payload.content_type)
    )


def retry_policy_from_pb(message: types_pb2.RetryPolicy, path: str = "") -> RetryPolicy:
    default = RetryPolicy()
    initial = opt_dur(message, "initial_interval", f"{path}initial_interval")
    initial = default.initial_interval if initial is None else initial
    maximum = opt_dur(message, "maximum_interval", f"{path}maximum_interval")
    return RetryPolicy(
        initial_interval=initial,
        backoff_coefficient=message.backoff_coefficient or default.backoff_coefficient,
        maximum_interval=initial * 100 if maximum is None else maximum,
        jitter=message.jitter,
        maximum_attempts=message.maximum_attempts,
        non_retryable_error_types=tuple(message.non_retryable_error_types),
    )


def retry_policy_to_pb(policy: RetryPolicy) -> types_pb2.RetryPolicy:
    return types_pb2.RetryPolicy(
        initial_interval=dur(policy.initial_interval),
        backoff_coefficient=policy.backoff_coefficient,
        maximum_interval=dur(policy.maximum_interval),
        jitter=policy.jitter,
        maximum_attempts=policy.maximum_attempts,
        non_retryable_error_types=list(policy.non_retryable_error_types),
    )


def spec_from_pb(message: pb.WorkOrderSpec, path: str = "work_order.") -> WorkOrderSpec:
    """The spec of a request's `work_order` (`path`: its field path, for violations)."""
    policy = (
        retry_policy_from_pb(message.retry_policy, f"{path}retry_policy.")
        if message.HasField("retry_policy")
        else RetryPolicy(maximum_attempts=0)
    )
    return WorkOrderSpec(
        priority=message.priority,
        payload=payload_from_pb(message.payload),
        idempotency_key=message.idempotency_key or None,
        concurrency_key=message.concurrency_key,
        not_before=opt_ts(message, "not_before", f"{path}not_before"),
        deadline=opt_ts(message, "deadline", f"{path}deadline"),
        start_to_close_timeout=opt_dur(
            message, "start_to_close_timeout", f"{path}start_to_close_timeout"
        ),
        heartbeat_timeout=opt_dur(message, "heartbeat_timeout", f"{path}heartbeat_timeout"),
        retry_policy=policy,
        labels=dict(message.labels),
    )


@functools.lru_cache(maxsize=256)
def _retry_policy_pb(policy: RetryPolicy) -> types_pb2.RetryPolicy:
    """One message per distinct policy (most orders share a few); only ever copied from."""
    return retry_policy_to_pb(policy)


def spec_to_pb(spec: WorkOrderSpec) -> pb.WorkOrderSpec:
    return pb.WorkOrderSpec(
        priority=spec.priority,
        payload=payload_to_pb(spec.payload),
        idempotency_key=spec.idempotency_key or "",
        concurrency_key=spec.concurrency_key,
        not_before=_ts(spec.not_before),
        deadline=_ts(spec.deadline),
        start_to_close_timeout=dur(spec.start_to_close_timeout),
        heartbeat_timeout=dur(spec.heartbeat_timeout),
        retry_policy=_retry_policy_pb(spec.retry_policy),  # copied into the spec
        labels=spec.labels,
    )


def failure_from_pb(message: types_pb2.Failure) -> Failure:
    return Failure(message.type, message.message, message.retryable, dict(message.details))


def failure_to_pb(failure: Failure | None) -> types_pb2.Failure | None:
    if failure is None:
        return None
    return types_pb2.Failure(
        type=failure.type,
        message=failure.message,
        retryable=failure.retryable,
        details=failure.details,
    )


def progress_from_pb(message: pb.Progress) -> Progress:
    return Progress(message.percent, message.message)


def progress_to_pb(progress: Progress | None) -> pb.Progress | None:
    if progress is None:
        return None
    return pb.Progress(
        percent=progress.percent, message=progress.message, update_time=ts(progress.updated_at)
    )


def order_to_pb(order: WorkOrder) -> pb.WorkOrder:
    return pb.WorkOrder(
        name=order.ref.name,
        id=str(order.id),
        namespace=order.namespace,
        queue=order.queue,
        state=STATE_TO_PB[order.state],
        spec=spec_to_pb(order.spec),
        attempt=order.attempt,
        max_attempts=order.max_attempts,
        create_time=_ts(order.created_at),
        update_time=_ts(order.updated_at),
        lease_expire_time=_ts(order.lease_expires_at),
        leased_by=order.leased_by,
        progress=progress_to_pb(order.progress),
        cancel_requested=order.cancel_requested,
        result=payload_to_pb(order.result),
        last_failure=failure_to_pb(order.last_failure),
        last_timeout_kind=(
            TIMEOUT_TO_PB[order.last_timeout_kind]
            if order.last_timeout_kind
            else pb.TIMEOUT_KIND_UNSPECIFIED
        ),
        complete_time=_ts(order.completed_at),
        correlation_id=order.correlation_id,
        traceparent=order.traceparent,
        redrive_count=order.redrive_count,
        available_time=_ts(order.available_at),
    )


def event_to_pb(event: WorkOrderEvent) -> pb.WorkOrderEvent:
    return pb.WorkOrderEvent(
        sequence=event.sequence,
        from_state=(
            STATE_TO_PB[event.from_state] if event.from_state else pb.WORK_ORDER_STATE_UNSPECIFIED
        ),
        to_state=STATE_TO_PB[event.to_state],
        time=ts(event.at),
        attempt=event.attempt,
        reason=event.reason,
        timeout_kind=(
            TIMEOUT_TO_PB[event.timeout_kind] if event.timeout_kind else pb.TIMEOUT_KIND_UNSPECIFIED
        ),
        failure=failure_to_pb(event.failure),
        actor=event.actor,
    )


def rate_from_pb(message: pb.RateLimit) -> RateLimit | None:
    if not message.tokens:
        return None
    return RateLimit(message.tokens, message.period.ToTimedelta(), message.burst)


def rate_to_pb(rate: RateLimit | None) -> pb.RateLimit | None:
    if rate is None:
        return None
    return pb.RateLimit(tokens=rate.tokens, period=dur(rate.period), burst=rate.burst)


def queue_to_pb(config: QueueConfig) -> pb.Queue:
    return pb.Queue(
        name=config.ref.name,
        namespace=config.namespace,
        queue_id=config.queue,
        paused=config.paused,
        max_in_flight=config.max_in_flight,
        max_in_flight_per_key=config.max_in_flight_per_key,
        fair=config.fair,
        rate_limit=rate_to_pb(config.rate_limit),
        rate_limit_per_key=rate_to_pb(config.rate_limit_per_key),
        create_time=ts(config.created_at),
        update_time=ts(config.updated_at),
    )


def stats_to_pb(stats: QueueStats) -> pb.QueueStats:
    p = stats.wait_time_percentiles
    return pb.QueueStats(
        queue=stats.queue.name,
        depth=[
            pb.StateCount(state=STATE_TO_PB[s], count=n) for s, n in sorted(stats.depth.items())
        ],
        in_flight=stats.in_flight,
        oldest_queued_age=dur(stats.oldest_queued_age),
        add_rate_per_second=stats.add_rate_per_second,
        dispatch_rate_per_second=stats.dispatch_rate_per_second,
        wait_time_p50=dur(p.get(50)),
        wait_time_p90=dur(p.get(90)),
        wait_time_p99=dur(p.get(99)),
        stats_window=dur(stats.window),
    )


def redrive_to_pb(redrive: Redrive) -> pb.Redrive:
    return pb.Redrive(
        name=redrive.name,
        requested_by=redrive.requested_by,
        reason=redrive.reason,
        error_type=redrive.error_type,
        redriven_count=redrive.redriven_count,
        create_time=ts(redrive.created_at),
    )
