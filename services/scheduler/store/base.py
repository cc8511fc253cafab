"""The scheduler's storage contract: a Protocol with Entity+Verb methods and their params.

Domain types in and out; nothing from SQLAlchemy crosses this line.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from conveyor_scheduler.domain.model import (
    Fire,
    FireOutcome,
    Job,
    JobDefinition,
    JobRef,
    PolicyDecision,
    Schedule,
    SchedulePolicy,
    ScheduleRef,
    ScheduleSpec,
)


@dataclass(frozen=True, slots=True)
class NewSchedule:
    uid: uuid.UUID
    ref: ScheduleRef
    spec: ScheduleSpec
    policy: SchedulePolicy
    next_slot_at: datetime | None
    next_fire_at: datetime | None
    now: datetime
    #: Created paused (CreateSchedule's `paused`): it fires only once resumed.
    paused: bool = False


@dataclass(frozen=True, slots=True)
class ScheduleTiming:
    """A schedule's next slot and due time, and optionally its backoff/advisor state."""

    next_slot_at: datetime | None
    next_fire_at: datetime | None
    backoff_level: int | None = None
    next_endpoints: tuple[str, ...] | None = None
    pending_since: datetime | None = None


@dataclass(frozen=True, slots=True)
class Submit:
    """A queue call to deliver after commit: a submit (spec bytes) or a cancel."""

    parent: str
    request: bytes = b""
    action: str = "submit"
    correlation_id: str = ""
    traceparent: str = ""
    slot_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class JournalEntry:
    type: str
    namespace: str
    subjects: dict[str, str]
    attributes: dict[str, str]
    correlation_id: str = ""
    traceparent: str = ""


@dataclass(frozen=True, slots=True)
class FireWrite:
    """One slot's fire row, with the submit (None: not fired) and its journal record."""

    fire: Fire
    submit: Submit | None
    journal: JournalEntry | None
    held: bool = False


@dataclass(frozen=True, slots=True)
class ActiveFire:
    id: uuid.UUID
    outcome: FireOutcome
    work_order: str


@dataclass(frozen=True, slots=True)
class DueSchedule:
    """A due schedule, as read inside the firing transaction."""

    schedule: Schedule
    job: Job
    active: tuple[ActiveFire, ...]
    buffered: int


@dataclass(frozen=True, slots=True)
class FirePlan:
    """What the engine decided for one due schedule."""

    writes: Sequence[FireWrite]
    timing: ScheduleTiming
    cancels: Sequence[Submit] = ()


@dataclass(frozen=True, slots=True)
class FireTickParams:
    """One firing tick.

    Attributes:
        plan: the engine's decision for one due schedule.
        poisoned: told of each due schedule that cannot be fired (its row cannot be
            read, `plan` raised, or its writes fail); the store then pauses it and
            records a "quarantined" policy decision with the cause, and fires the rest.
    """

    now: datetime
    limit: int
    lease_name: str
    fencing_token: int
    plan: Callable[[DueSchedule], FirePlan]
    poisoned: Callable[[str, BaseException], None] = lambda item, error: None


@dataclass(frozen=True, slots=True)
class NewDecision:
    schedule_uid: uuid.UUID
    fire_id: uuid.UUID | None
    policy: str
    next_fire_at: datetime | None
    backoff_level: int
    reason: str
    details: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FireFinish:
    """A fire's outcome read back from the queue, and what it changes on its schedule."""

    fire_id: uuid.UUID
    outcome: FireOutcome
    now: datetime
    work_found: bool | None = None
    error_type: str = ""
    reason: str = ""
    timing: ScheduleTiming | None = None
    decision: NewDecision | None = None


@dataclass(frozen=True, slots=True)
class Delivery:
    """The result of delivering one outbox row."""

    seq: int
    fire_id: uuid.UUID
    action: str
    work_order: str = ""
    error: str = ""
    error_type: str = ""


@dataclass(frozen=True, slots=True)
class OutboxSubmit:
    seq: int
    fire_id: uuid.UUID
    action: str
    parent: str
    request: bytes
    correlation_id: str
    traceparent: str
    fencing_token: int
    slot_at: datetime


class FencingTokenStale(Exception):
    """A newer leader has fired: this replica's firing transaction must not commit."""


class SchedulerStore(Protocol):
    async def job_insert(self, ref: JobRef, definition: JobDefinition, now: datetime) -> Job: ...
    async def job_get(self, ref: JobRef, version: int = 0) -> Job: ...
    async def job_list(self, namespace: str, after: str, limit: int) -> list[Job]: ...
    async def job_update(
        self, ref: JobRef, definition: JobDefinition, expected_version: int, now: datetime
    ) -> Job: ...
    async def job_delete(self, ref: JobRef) -> None: ...

    async def schedule_insert(self, new: NewSchedule, max_per_job: int) -> Schedule: ...
    async def schedule_get(self, ref: ScheduleRef) -> Schedule: ...
    async def schedule_get_by_uid(self, uid: uuid.UUID) -> Schedule | None: ...
    async def schedule_list(
        self, namespace: str, job_id: str | None, after: str, limit: int
    ) -> list[Schedule]: ...
    async def schedule_list_on_event(self, limit: int) -> list[Schedule]: ...
    async def schedule_delete(self, ref: ScheduleRef) -> None: ...
    async def schedule_update(self, new: NewSchedule) -> Schedule:
        """The schedule as this update wrote it (not re-read: the fire loop may move it)."""
        ...

    async def schedule_set_paused(
        self, ref: ScheduleRef, paused: bool, timing: ScheduleTiming, now: datetime
    ) -> Schedule:
        """The schedule as this write left it (a schedule resumed due now may fire at once)."""
        ...

    async def schedule_set_timing(
        self, uid: uuid.UUID, timing: ScheduleTiming, now: datetime, *, only_if_idle: bool = False
    ) -> bool: ...

    async def fire_tick(self, params: FireTickParams) -> list[FireWrite]: ...
    async def fire_insert_many(
        self, schedule_uid: uuid.UUID, writes: Sequence[FireWrite]
    ) -> list[FireWrite]: ...
    async def fire_list(
        self, schedule_uid: uuid.UUID, before_seq: int, limit: int
    ) -> list[tuple[int, Fire]]: ...
    async def fire_list_active(
        self, now: datetime, limit: int, recheck_after: datetime
    ) -> list[Fire]: ...
    async def fire_list_recent(self, schedule_uid: uuid.UUID, limit: int) -> list[Fire]: ...
    async def fire_set_running(self, fire_ids: Sequence[uuid.UUID], now: datetime) -> None: ...
    async def fire_finish(self, finish: FireFinish) -> None: ...
    async def fire_has_active(self, schedule_uid: uuid.UUID) -> bool: ...

    async def submit_outbox_claim(self, limit: int) -> list[OutboxSubmit]: ...
    async def submit_outbox_mark(self, deliveries: Sequence[Delivery], now: datetime) -> None: ...

    async def decision_insert(self, decision: NewDecision, now: datetime) -> None: ...
    async def journal_insert(self, entry: JournalEntry, now: datetime) -> None: ...
    async def decision_list(
        self, schedule_uid: uuid.UUID, before_seq: int, limit: int
    ) -> list[PolicyDecision]: ...
