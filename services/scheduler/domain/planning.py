"""What happens to each due slot of a schedule: fire, buffer, skip or miss. Pure logic.

Overlap (a slot is due while an earlier fire's order is still queued or running):

* skip: the slot is skipped (reason "overlap");
* buffer_one: the first such slot waits (BUFFERED) and fires when the running
  fire ends; further ones are skipped (reason "overlap_buffer_full");
* buffer_all: every such slot waits, and they fire one after another;
* cancel_other: the running orders are cancelled and the slot fires;
* allow_all: the slot fires.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from conveyor_scheduler.domain import adaptive, timing
from conveyor_scheduler.domain.model import (
    AdaptiveMode,
    FireOutcome,
    Job,
    OverlapPolicy,
    Schedule,
    ScheduleKind,
    ScheduleSpec,
)


@dataclass(frozen=True, slots=True)
class SlotDecision:
    slot: datetime
    outcome: FireOutcome  # PENDING (fire now), BUFFERED, SKIPPED or MISSED
    reason: str = ""


@dataclass(frozen=True, slots=True)
class SchedulePlan:
    decisions: list[SlotDecision]
    next_slot: datetime | None
    next_fire: datetime | None
    missed_unrecorded: int = 0
    cancel_orders: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Limits:
    max_fires: int
    max_recorded_missed: int
    backoff_multiplier: float
    backoff_max_factor: float


def effective_spec(schedule: Schedule, job: Job, limits: Limits) -> ScheduleSpec:
    """The spec slots follow now: an interval stretched by adaptive backoff from the next slot."""
    spec = schedule.spec
    config = job.definition.adaptive
    if (
        spec.kind is ScheduleKind.INTERVAL
        and config.mode is AdaptiveMode.BACKOFF
        and schedule.backoff_level > 0
        and schedule.next_slot_at is not None
        and spec.every is not None
    ):
        every = adaptive.stretched(
            spec.every,
            schedule.backoff_level,
            config.multiplier or limits.backoff_multiplier,
            max_interval(spec.every, job, limits),
        )
        return ScheduleSpec(ScheduleKind.INTERVAL, every=every, anchor=schedule.next_slot_at)
    return spec


def max_interval(every: timedelta, job: Job, limits: Limits) -> timedelta:
    return job.definition.adaptive.max_interval or every * limits.backoff_max_factor


def plan_due(
    schedule: Schedule,
    job: Job,
    active_orders: list[str],
    active: int,
    buffered: int,
    now: datetime,
    limits: Limits,
) -> SchedulePlan:
    """Decide every due slot of `schedule` at `now`.

    Args:
        active_orders: work order names of its fires still queued or running.
        active: how many of its fires are still queued or running (some not yet submitted).
        buffered: how many of its fires wait in the overlap buffer.
    """
    assert schedule.next_slot_at is not None
    spec = effective_spec(schedule, job, limits)
    due = timing.due_slots(
        spec,
        schedule.policy,
        schedule.next_slot_at,
        now,
        max_fires=limits.max_fires,
        max_recorded_missed=limits.max_recorded_missed,
    )
    window = schedule.policy.catch_up_window
    decisions = [
        SlotDecision(slot, FireOutcome.MISSED, f"older than the catch-up window ({window})")
        for slot in due.missed
    ]
    decisions += [
        SlotDecision(slot, FireOutcome.SKIPPED, "catch_up_fire_once: a later slot fired")
        for slot in due.skipped
    ]
    overlap, cancels = _overlap(schedule.policy.overlap, due.fire, active, buffered, active_orders)
    decisions += overlap
    next_fire = None
    if due.next_slot is not None:
        next_fire = timing.fire_time(schedule.uid, due.next_slot, schedule.policy.jitter)
    return SchedulePlan(decisions, due.next_slot, next_fire, due.missed_unrecorded, cancels)


def _overlap(
    policy: OverlapPolicy, slots: list[datetime], active: int, buffered: int, orders: list[str]
) -> tuple[list[SlotDecision], list[str]]:
    decisions: list[SlotDecision] = []
    cancels: list[str] = []
    for slot in slots:
        if active == 0 or policy is OverlapPolicy.ALLOW_ALL:
            decisions.append(SlotDecision(slot, FireOutcome.PENDING))
            active += 1
        elif policy is OverlapPolicy.CANCEL_OTHER:
            cancels += orders
            orders = []
            decisions.append(SlotDecision(slot, FireOutcome.PENDING, "cancelled the running fire"))
        elif policy is OverlapPolicy.BUFFER_ALL or (
            policy is OverlapPolicy.BUFFER_ONE and buffered == 0
        ):
            decisions.append(SlotDecision(slot, FireOutcome.BUFFERED, "overlap: waits its turn"))
            buffered += 1
        elif policy is OverlapPolicy.BUFFER_ONE:
            decisions.append(SlotDecision(slot, FireOutcome.SKIPPED, "overlap_buffer_full"))
        else:
            decisions.append(SlotDecision(slot, FireOutcome.SKIPPED, "overlap"))
    return decisions, cancels
