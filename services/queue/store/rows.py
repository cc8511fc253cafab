"""Row <-> domain conversion for the queue tables."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import RowMapping

if TYPE_CHECKING:
    from asyncpg import Record

from conveyor_core.clock import from_micros, opt_from_micros
from conveyor_queue.domain.model import (
    Failure,
    Payload,
    Progress,
    QueueConfig,
    RateLimit,
    Redrive,
    RetryPolicy,
    TimeoutKind,
    WorkOrder,
    WorkOrderEvent,
    WorkOrderSpec,
    WorkOrderState,
)

FAR_FUTURE_US = 2**62


def us(delta: timedelta | None) -> int:
    return 0 if delta is None else int(delta.total_seconds() * 1_000_000)


def policy_to_json(policy: RetryPolicy) -> dict[str, Any]:
    return {
        "initial_us": us(policy.initial_interval),
        "coefficient": policy.backoff_coefficient,
        "max_us": us(policy.maximum_interval),
        "jitter": policy.jitter,
        "max_attempts": policy.maximum_attempts,
        "non_retryable": list(policy.non_retryable_error_types),
    }


def policy_from_json(data: Mapping[str, Any]) -> RetryPolicy:
    return _policy(
        data["initial_us"],
        data["coefficient"],
        data["max_us"],
        data["jitter"],
        data["max_attempts"],
        tuple(data["non_retryable"]),
    )


@functools.lru_cache(maxsize=256)  # most orders share a few policies; RetryPolicy is frozen
def _policy(
    initial_us: int,
    coefficient: float,
    max_us: int,
    jitter: float,
    max_attempts: int,
    non_retryable: tuple[str, ...],
) -> RetryPolicy:
    return RetryPolicy(
        initial_interval=timedelta(microseconds=initial_us),
        backoff_coefficient=coefficient,
        maximum_interval=timedelta(microseconds=max_us),
        jitter=jitter,
        maximum_attempts=max_attempts,
        non_retryable_error_types=non_retryable,
    )


def failure_to_json(failure: Failure | None) -> dict[str, Any] | None:
    if failure is None:
        return None
    return {
        "type": failure.type,
        "message": failure.message,
        "retryable": failure.retryable,
        "details": dict(failure.details),
    }


def failure_from_json(data: Mapping[str, Any] | None) -> Failure | None:
    if not data:
        return None
    return Failure(data["type"], data["message"], data["retryable"], dict(data["details"]))


def _delta(value: int) -> timedelta | None:
    return timedelta(microseconds=value) if value else None


def order_from_row(m: RowMapping | Mapping[str, Any] | Record) -> WorkOrder:
    spec = WorkOrderSpec(
        priority=m["priority"],
        payload=Payload(m["payload"], m["content_type"]),
        idempotency_key=m["idempotency_key"],
        concurrency_key=m["concurrency_key"],
        not_before=opt_from_micros(m["not_before"]),
        deadline=opt_from_micros(m["deadline_at"]),
        start_to_close_timeout=_delta(m["start_to_close_us"]),
        heartbeat_timeout=_delta(m["heartbeat_timeout_us"]),
        retry_policy=policy_from_json(m["retry_policy"]),
        labels=dict(m["labels"]),
    )
    progress = None
    if m["progress_percent"] is not None or m["progress_message"]:
        progress = Progress(
            m["progress_percent"] or 0.0,
            m["progress_message"] or "",
            opt_from_micros(m["heartbeat_at"]),
        )
    result = None
    if m["result"] is not None:
        result = Payload(m["result"], m["result_content_type"] or "")
    return WorkOrder(
        id=m["id"],
        namespace=m["namespace"],
        queue=m["queue"],
        state=WorkOrderState(m["state"]),
        spec=spec,
        attempt=m["attempt"],
        created_at=from_micros(m["created_at"]),
        updated_at=from_micros(m["updated_at"]),
        available_at=from_micros(m["available_at"]),
        correlation_id=m["correlation_id"],
        traceparent=m["traceparent"],
        leased_at=opt_from_micros(m["leased_at"]),
        lease_expires_at=opt_from_micros(m["lease_expires_at"]) if m["state"] == "LEASED" else None,
        leased_by=m["leased_by"] if m["state"] == "LEASED" else "",
        progress=progress,
        cancel_requested=m["cancel_requested"],
        result=result,
        last_failure=failure_from_json(m["failure"]),
        last_timeout_kind=TimeoutKind(m["timeout_kind"]) if m["timeout_kind"] else None,
        completed_at=opt_from_micros(m["completed_at"]),
        redrive_count=m["redrive_count"],
    )


def event_from_row(m: RowMapping | Mapping[str, Any]) -> WorkOrderEvent:
    return WorkOrderEvent(
        sequence=m["seq"],
        work_order_id=m["work_order_id"],
        namespace=m["namespace"],
        queue=m["queue"],
        from_state=WorkOrderState(m["from_state"]) if m["from_state"] else None,
        to_state=WorkOrderState(m["to_state"]),
        at=from_micros(m["at"]),
        attempt=m["attempt"],
        reason=m["reason"],
        actor=m["actor"],
        timeout_kind=TimeoutKind(m["timeout_kind"]) if m["timeout_kind"] else None,
        failure=failure_from_json(m["failure"]),
        correlation_id=m["correlation_id"],
    )


def _rate(tokens: int, period_us: int, burst: int) -> RateLimit | None:
    if not tokens or not period_us:
        return None
    return RateLimit(tokens, timedelta(microseconds=period_us), burst)


def queue_from_row(m: RowMapping | Mapping[str, Any]) -> QueueConfig:
    return QueueConfig(
        namespace=m["namespace"],
        queue=m["queue"],
        paused=m["paused"],
        max_in_flight=m["max_in_flight"],
        max_in_flight_per_key=m["max_in_flight_per_key"],
        fair=m["fair"],
        rate_limit=_rate(m["rate_tokens"], m["rate_period_us"], m["rate_burst"]),
        rate_limit_per_key=_rate(
            m["key_rate_tokens"], m["key_rate_period_us"], m["key_rate_burst"]
        ),
        created_at=from_micros(m["created_at"]),
        updated_at=from_micros(m["updated_at"]),
    )


def queue_to_row(config: QueueConfig) -> dict[str, Any]:
    rate, key_rate = config.rate_limit, config.rate_limit_per_key
    return {
        "paused": config.paused,
        "max_in_flight": config.max_in_flight,
        "max_in_flight_per_key": config.max_in_flight_per_key,
        "fair": config.fair,
        "rate_tokens": rate.tokens if rate else 0,
        "rate_period_us": us(rate.period) if rate else 0,
        "rate_burst": rate.burst if rate else 0,
        "key_rate_tokens": key_rate.tokens if key_rate else 0,
        "key_rate_period_us": us(key_rate.period) if key_rate else 0,
        "key_rate_burst": key_rate.burst if key_rate else 0,
    }


def redrive_from_row(m: RowMapping | Mapping[str, Any]) -> Redrive:
    return Redrive(
        id=m["id"],
        namespace=m["namespace"],
        queue=m["queue"],
        requested_by=m["requested_by"],
        reason=m["reason"],
        error_type=m["error_type"],
        redriven_count=m["redriven_count"],
        created_at=from_micros(m["created_at"]),
        request_id=m["request_id"] or "",
    )
