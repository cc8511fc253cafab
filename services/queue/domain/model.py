"""Work-order queue domain types. Pure data: no I/O, nothing from SQLAlchemy or protobuf."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum


class WorkOrderState(StrEnum):
    QUEUED = "QUEUED"
    LEASED = "LEASED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    DEAD = "DEAD"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset(
    {
        WorkOrderState.SUCCEEDED,
        WorkOrderState.FAILED,
        WorkOrderState.CANCELLED,
        WorkOrderState.DEAD,
    }
)


class TimeoutKind(StrEnum):
    SCHEDULE_TO_START = "SCHEDULE_TO_START"
    START_TO_CLOSE = "START_TO_CLOSE"
    HEARTBEAT = "HEARTBEAT"
    LEASE_EXPIRED = "LEASE_EXPIRED"


@dataclass(frozen=True, slots=True)
class Payload:
    data: bytes = b""
    content_type: str = ""


@dataclass(frozen=True, slots=True)
class Failure:
    type: str
    message: str = ""
    retryable: bool = True
    details: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    initial_interval: timedelta = timedelta(seconds=1)
    backoff_coefficient: float = 2.0
    maximum_interval: timedelta = timedelta(seconds=100)
    jitter: float = 0.2
    maximum_attempts: int = 3
    non_retryable_error_types: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Progress:
    percent: float = 0.0
    message: str = ""
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class WorkOrderSpec:
    """What a client asks for; the engine fills defaults before storing it."""

    priority: int = 0
    payload: Payload = Payload()
    idempotency_key: str | None = None
    concurrency_key: str = ""
    not_before: datetime | None = None
    deadline: datetime | None = None
    start_to_close_timeout: timedelta | None = None
    heartbeat_timeout: timedelta | None = None
    retry_policy: RetryPolicy = RetryPolicy()
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class QueueRef:
    namespace: str
    queue: str

    @property
    def name(self) -> str:
        return f"namespaces/{self.namespace}/queues/{self.queue}"

    @property
    def channel(self) -> str:
        """Coordination channel that wakes leasers of this queue."""
        return f"queue:{self.namespace}/{self.queue}"


@dataclass(frozen=True, slots=True)
class WorkOrderRef:
    namespace: str
    queue: str
    id: uuid.UUID

    @property
    def name(self) -> str:
        return f"namespaces/{self.namespace}/queues/{self.queue}/workOrders/{self.id}"


@dataclass(frozen=True, slots=True)
class WorkOrder:
    id: uuid.UUID
    namespace: str
    queue: str
    state: WorkOrderState
    spec: WorkOrderSpec
    attempt: int
    created_at: datetime
    updated_at: datetime
    available_at: datetime
    correlation_id: str = ""
    traceparent: str = ""
    leased_at: datetime | None = None
    lease_expires_at: datetime | None = None
    leased_by: str = ""
    progress: Progress | None = None
    cancel_requested: bool = False
    result: Payload | None = None
    last_failure: Failure | None = None
    last_timeout_kind: TimeoutKind | None = None
    completed_at: datetime | None = None
    redrive_count: int = 0

    @property
    def ref(self) -> WorkOrderRef:
        return WorkOrderRef(self.namespace, self.queue, self.id)

    @property
    def max_attempts(self) -> int:
        return self.spec.retry_policy.maximum_attempts


@dataclass(frozen=True, slots=True)
class CompletedWorkOrder:
    """What a batch completion needs of each completed order: spans and wake-ups, no payloads."""

    id: uuid.UUID
    namespace: str
    queue: str
    state: WorkOrderState
    attempt: int
    correlation_id: str = ""
    traceparent: str = ""


@dataclass(frozen=True, slots=True)
class LeasedWorkOrder:
    work_order: WorkOrder
    lease_token: str


@dataclass(frozen=True, slots=True)
class RateLimit:
    tokens: int
    period: timedelta
    burst: int = 0

    @property
    def per_second(self) -> float:
        return self.tokens / self.period.total_seconds()

    @property
    def bucket(self) -> int:
        return self.burst or self.tokens


@dataclass(frozen=True, slots=True)
class QueueConfig:
    namespace: str
    queue: str
    paused: bool = False
    max_in_flight: int = 0
    max_in_flight_per_key: int = 0
    fair: bool = False
    rate_limit: RateLimit | None = None
    rate_limit_per_key: RateLimit | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def ref(self) -> QueueRef:
        return QueueRef(self.namespace, self.queue)

    @property
    def flow_controlled(self) -> bool:
        """Whether leasing must look at in-flight counts, keys or rate limits."""
        return bool(
            self.max_in_flight
            or self.max_in_flight_per_key
            or self.fair
            or self.rate_limit
            or self.rate_limit_per_key
        )

    @property
    def per_key(self) -> bool:
        return bool(self.max_in_flight_per_key or self.fair or self.rate_limit_per_key)


@dataclass(frozen=True, slots=True)
class WorkOrderEvent:
    """One state change of an order (its history; the journal's source via the outbox)."""

    sequence: int
    work_order_id: uuid.UUID
    namespace: str
    queue: str
    from_state: WorkOrderState | None
    to_state: WorkOrderState
    at: datetime
    attempt: int
    reason: str
    actor: str = ""
    timeout_kind: TimeoutKind | None = None
    failure: Failure | None = None
    correlation_id: str = ""


@dataclass(frozen=True, slots=True)
class Redrive:
    id: uuid.UUID
    namespace: str
    queue: str
    requested_by: str
    reason: str
    error_type: str
    redriven_count: int
    created_at: datetime
    request_id: str = ""

    @property
    def name(self) -> str:
        return f"namespaces/{self.namespace}/queues/{self.queue}/redrives/{self.id}"


@dataclass(frozen=True, slots=True)
class QueueStats:
    queue: QueueRef
    depth: dict[WorkOrderState, int]
    in_flight: int
    oldest_queued_age: timedelta | None
    add_rate_per_second: float
    dispatch_rate_per_second: float
    wait_time_percentiles: dict[int, timedelta]
    window: timedelta


@dataclass(frozen=True, slots=True)
class Position:
    state: WorkOrderState
    ahead: int
    dispatch_rate_per_second: float
    estimated_start: datetime | None
