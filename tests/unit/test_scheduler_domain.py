"""Scheduler domain: slots, cron across DST, jitter, catch-up, overlap and adaptive backoff."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest

from conveyor_scheduler.domain import adaptive, planning, timing
from conveyor_scheduler.domain.model import (
    CatchUpMode,
    FireOutcome,
    OverlapPolicy,
    ScheduleKind,
    SchedulePolicy,
    ScheduleSpec,
)

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def every(seconds: float, anchor: datetime = T0) -> ScheduleSpec:
    return ScheduleSpec(ScheduleKind.INTERVAL, every=timedelta(seconds=seconds), anchor=anchor)


def daily_0230(zone: str) -> ScheduleSpec:
    return ScheduleSpec(ScheduleKind.CRON, cron="30 2 * * *", time_zone=zone)


def local(spec: ScheduleSpec, slots: list[datetime]) -> list[str]:
    zone = ZoneInfo(spec.time_zone)
    return [s.astimezone(zone).strftime("%m-%d %H:%M %Z") for s in slots]


def test_interval_slots_follow_the_anchor_grid() -> None:
    spec = every(60)
    assert timing.next_slot_after(spec, T0) == T0 + timedelta(seconds=60)
    assert timing.next_slot_after(spec, T0 + timedelta(seconds=59)) == T0 + timedelta(seconds=60)
    assert timing.first_slot_from(spec, T0) == T0
    assert timing.slots_in(spec, T0, T0 + timedelta(minutes=3), 10) == [
        T0 + timedelta(minutes=m) for m in range(3)
    ]


@pytest.mark.parametrize(
    ("zone", "day"),
    [
        ("Europe/Berlin", datetime(2030, 3, 31, tzinfo=UTC)),
        ("America/New_York", datetime(2030, 3, 10, tzinfo=UTC)),
    ],
)
def test_daily_0230_fires_once_on_the_spring_forward_day(zone: str, day: datetime) -> None:
    spec = daily_0230(zone)
    slots = timing.slots_in(spec, day - timedelta(days=1), day + timedelta(days=2), 10)
    on_the_day = [s for s in slots if s.astimezone(ZoneInfo(zone)).date() == day.date()]
    # 02:30 does not exist that day: Debian cron fires once, right after the gap (03:00).
    assert local(spec, on_the_day) == [
        f"{day:%m-%d} 03:00 " + on_the_day[0].astimezone(ZoneInfo(zone)).strftime("%Z")
    ]
    assert len(slots) == 3 and len(set(slots)) == 3


@pytest.mark.parametrize(
    ("zone", "day"),
    [
        ("Europe/Berlin", datetime(2030, 10, 27, tzinfo=UTC)),
        ("America/New_York", datetime(2030, 11, 3, tzinfo=UTC)),
    ],
)
def test_daily_0230_fires_once_on_the_fall_back_day(zone: str, day: datetime) -> None:
    spec = daily_0230(zone)
    slots = timing.slots_in(spec, day - timedelta(days=1), day + timedelta(days=2), 10)
    on_the_day = [s for s in slots if s.astimezone(ZoneInfo(zone)).date() == day.date()]
    assert len(on_the_day) == 1
    assert on_the_day[0].astimezone(ZoneInfo(zone)).strftime("%H:%M") == "02:30"
    gaps = {b - a for a, b in pairwise(slots)}
    assert gaps <= {timedelta(hours=23), timedelta(hours=24), timedelta(hours=25)}


def test_cron_and_time_zone_problems_are_described() -> None:
    assert timing.check_cron("61 * * * *", "UTC") is not None
    assert timing.check_cron("*/5 * * * *", "UTC") is None
    assert timing.check_time_zone("Mars/Olympus") is not None
    assert timing.check_time_zone("Europe/Berlin") is None


def test_jitter_is_deterministic_per_schedule_and_slot_and_bounded() -> None:
    uid, jitter = uuid.uuid4(), timedelta(seconds=30)
    offsets = [timing.jitter_offset(uid, T0 + timedelta(minutes=m), jitter) for m in range(50)]
    assert offsets == [
        timing.jitter_offset(uid, T0 + timedelta(minutes=m), jitter) for m in range(50)
    ]
    assert all(timedelta(0) <= o < jitter for o in offsets)
    assert len(set(offsets)) > 40
    assert timing.jitter_offset(uid, T0, timedelta(0)) == timedelta(0)


def policy(catch_up: CatchUpMode, window: float = 300, **fields) -> SchedulePolicy:  # type: ignore[no-untyped-def]
    return SchedulePolicy(catch_up=catch_up, catch_up_window=timedelta(seconds=window), **fields)


def test_catch_up_fire_once_fires_the_latest_slot_in_the_window_and_misses_older() -> None:
    now = T0 + timedelta(minutes=10)
    due = timing.due_slots(
        every(60),
        policy(CatchUpMode.FIRE_ONCE, 180),
        T0,
        now,
        max_fires=100,
        max_recorded_missed=100,
    )
    assert due.missed == [T0 + timedelta(minutes=m) for m in range(7)]
    assert due.skipped == [T0 + timedelta(minutes=m) for m in (7, 8, 9)]
    assert due.fire == [now]
    assert due.next_slot == now + timedelta(minutes=1)


def test_catch_up_fire_all_fires_every_slot_in_the_window() -> None:
    now = T0 + timedelta(minutes=10)
    due = timing.due_slots(
        every(60),
        policy(CatchUpMode.FIRE_ALL, 180),
        T0,
        now,
        max_fires=100,
        max_recorded_missed=100,
    )
    assert due.fire == [T0 + timedelta(minutes=m) for m in (7, 8, 9, 10)]
    assert len(due.missed) == 7 and not due.skipped


def test_a_long_outage_records_a_bounded_number_of_missed_slots_and_counts_the_rest() -> None:
    now = T0 + timedelta(days=1)
    due = timing.due_slots(
        every(1), policy(CatchUpMode.FIRE_ONCE, 0), T0, now, max_fires=100, max_recorded_missed=5
    )
    assert len(due.missed) == 5
    assert len(due.missed) + due.missed_unrecorded == 86_400
    assert due.fire == [now]


def test_overlap_policies() -> None:
    slots = [T0, T0 + timedelta(minutes=1)]

    def outcomes(policy: OverlapPolicy, active: int, buffered: int = 0) -> list[FireOutcome]:
        decisions, _ = planning._overlap(policy, slots, active, buffered, ["orders/1"])
        return [d.outcome for d in decisions]

    P, B, S = FireOutcome.PENDING, FireOutcome.BUFFERED, FireOutcome.SKIPPED
    assert outcomes(OverlapPolicy.SKIP, 0) == [P, S]
    assert outcomes(OverlapPolicy.SKIP, 1) == [S, S]
    assert outcomes(OverlapPolicy.BUFFER_ONE, 1) == [B, S]
    assert outcomes(OverlapPolicy.BUFFER_ONE, 1, buffered=1) == [S, S]
    assert outcomes(OverlapPolicy.BUFFER_ALL, 1) == [B, B]
    assert outcomes(OverlapPolicy.ALLOW_ALL, 1) == [P, P]
    decisions, cancels = planning._overlap(
        OverlapPolicy.CANCEL_OTHER, slots[:1], 1, 0, ["orders/1"]
    )
    assert [d.outcome for d in decisions] == [P] and cancels == ["orders/1"]


def test_adaptive_backoff_stretches_on_idle_or_failure_and_snaps_back_on_work() -> None:
    base, cap = timedelta(seconds=60), timedelta(minutes=8)
    level, intervals = 0, []
    sequence = [
        (FireOutcome.SUCCEEDED, False),
        (FireOutcome.SUCCEEDED, False),
        (FireOutcome.FAILED, None),
        (FireOutcome.SUCCEEDED, False),
        (FireOutcome.SUCCEEDED, False),
        (FireOutcome.SUCCEEDED, True),
    ]
    for outcome, work in sequence:
        step = adaptive.backoff_step(
            level, outcome, work, base=base, multiplier=2, max_interval=cap, max_level=20
        )
        level = step.level
        intervals.append(step.interval.total_seconds())
        assert step.reason
    assert intervals == [120, 240, 480, 480, 480, 60]
