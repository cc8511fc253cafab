"""Scheduler domain types. Pure data: no I/O, nothing from SQLAlchemy or protobuf."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum


@dataclass(frozen=True, slots=True)
class JobRef:
    namespace: str
    job_id: str

    @property
    def name(self) -> str:
        return f"namespaces/{self.namespace}/jobs/{self.job_id}"


@dataclass(frozen=True, slots=True)
class ScheduleRef:
    namespace: str
    job_id: str
    schedule_id: str

    @property
    def job(self) -> JobRef:
        return JobRef(self.namespace, self.job_id)

    @property
    def name(self) -> str:
        return f"{self.job.name}/schedules/{self.schedule_id}"


class AdaptiveMode(StrEnum):
    FIXED = "fixed"
    BACKOFF = "backoff"


@dataclass(frozen=True, slots=True)
class AdaptiveConfig:
    mode: AdaptiveMode = AdaptiveMode.FIXED
    multiplier: float | None = None  # None: the service default
    max_interval: timedelta | None = None  # None: the service default factor x interval
    advisor_enabled: bool = False


@dataclass(frozen=True, slots=True)
class Endpoint:
    """An HTTP endpoint of a job, as far as the scheduler's policies care."""

    name: str
    depends_on: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class JobDefinition:
    """What a job version says. `document` is the serialized definition (the shared contract)."""

    document: bytes
    queue: str
    priority: int = 0
    adaptive: AdaptiveConfig = field(default_factory=AdaptiveConfig)
    endpoints: tuple[Endpoint, ...] = ()


@dataclass(frozen=True, slots=True)
class Job:
    ref: JobRef
    version: int
    definition: JobDefinition
    created_at: datetime
    updated_at: datetime


class ScheduleKind(StrEnum):
    INTERVAL = "interval"
    CRON = "cron"
    ONE_OFF = "one_off"
    EVENT = "event"


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    """When a schedule fires; which fields matter depends on `kind`."""

    kind: ScheduleKind
    every: timedelta | None = None
    anchor: datetime | None = None
    cron: str = ""
    time_zone: str = "UTC"
    fire_at: datetime | None = None
    topic: str = ""
    debounce: timedelta = timedelta(0)


class OverlapPolicy(StrEnum):
    SKIP = "skip"
    BUFFER_ONE = "buffer_one"
    BUFFER_ALL = "buffer_all"
    CANCEL_OTHER = "cancel_other"
    ALLOW_ALL = "allow_all"


class CatchUpMode(StrEnum):
    FIRE_ONCE = "fire_once"
    FIRE_ALL = "fire_all"


@dataclass(frozen=True, slots=True)
class SchedulePolicy:
    overlap: OverlapPolicy = OverlapPolicy.SKIP
    catch_up: CatchUpMode = CatchUpMode.FIRE_ONCE
    catch_up_window: timedelta = timedelta(minutes=5)
    jitter: timedelta = timedelta(0)


@dataclass(frozen=True, slots=True)
class Schedule:
    """A schedule and its firing state.

    Attributes:
        next_slot_at: the next slot (None: nothing scheduled).
        next_fire_at: when that slot is due: the slot plus its deterministic jitter.
        next_endpoints: endpoints the advisor chose for the next fire (empty: all).
    """

    uid: uuid.UUID
    ref: ScheduleRef
    spec: ScheduleSpec
    policy: SchedulePolicy
    paused: bool
    next_slot_at: datetime | None
    next_fire_at: datetime | None
    backoff_level: int
    created_at: datetime
    updated_at: datetime
    next_endpoints: tuple[str, ...] = ()


class FireKind(StrEnum):
    SCHEDULED = "scheduled"
    TRIGGERED = "triggered"
    BACKFILL = "backfill"


class FireOutcome(StrEnum):
    PENDING = "pending"
    SUBMITTED = "submitted"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    BUFFERED = "buffered"
    SKIPPED = "skipped"
    MISSED = "missed"

    @property
    def active(self) -> bool:
        """The fire's work order may still run."""
        return self in {FireOutcome.PENDING, FireOutcome.SUBMITTED, FireOutcome.RUNNING}

    @property
    def finished(self) -> bool:
        return self in {FireOutcome.SUCCEEDED, FireOutcome.FAILED, FireOutcome.CANCELLED}


@dataclass(frozen=True, slots=True)
class Fire:
    id: uuid.UUID
    schedule_uid: uuid.UUID
    schedule: ScheduleRef
    kind: FireKind
    outcome: FireOutcome
    slot_at: datetime
    fired_at: datetime
    job_version: int
    submitted_at: datetime | None = None
    work_order: str = ""
    work_found: bool | None = None
    reason: str = ""
    error_type: str = ""
    endpoints: tuple[str, ...] = ()
    correlation_id: str = ""
    finished_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class PolicyDecision:
    seq: int
    schedule: ScheduleRef
    policy: str
    fire_id: uuid.UUID | None
    next_fire_at: datetime | None
    backoff_level: int
    reason: str
    created_at: datetime
    endpoints: tuple[str, ...] = ()
    classifications: tuple[str, ...] = ()
    repair_attempts: int = 0
    salvaged: bool = False
    input_tokens: int = 0
    output_tokens: int = 0
    fallback_reason: str = ""


@dataclass(frozen=True, slots=True)
class JobRunRequest:
    """RunJob: run `job` now, outside its schedules (engine.run_job)."""

    job: JobRef
    version: int = 0
    endpoints: tuple[str, ...] = ()
    #: A serialized conveyor.common.v1.Payload, or None.
    input_payload: bytes | None = None
    request_id: str = ""


@dataclass(frozen=True, slots=True)
class SubmittedOrder:
    """What the queue answered to a submit."""

    name: str
    id: str
    already_exists: bool
    correlation_id: str


@dataclass(frozen=True, slots=True)
class JobRun:
    """The answer to a RunJob: the order submitted (or found by its request id)."""

    order: SubmittedOrder
    job_version: int
