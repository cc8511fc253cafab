"""When slots fall: interval grids, cron in a time zone (DST per Debian cron), jitter, catch-up.

Pure functions of their arguments; `now` always comes from the caller's clock.

DST (cron schedules): expressions are read in the schedule's IANA time zone
by `cronsim`, which follows Debian cron: a fixed time that does not exist on a
spring-forward day (02:30 in Europe/Berlin) fires once, at the first instant
after the gap (03:00); a fixed time that exists twice on a fall-back day fires
once, at its first occurrence; expressions with a wildcard hour ("0 * * * *")
fire on every real hour, so twice in the repeated hour.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError

from conveyor_scheduler.domain.model import CatchUpMode, ScheduleKind, SchedulePolicy, ScheduleSpec

#: Fields of a cron expression (CronSpec: five-field).
CRON_FIELDS = 5


def idempotency_key(schedule_uid: uuid.UUID, slot: datetime) -> str:
    """`schedule/<uid>/<slot instant, RFC 3339 UTC with microseconds>`: one order per slot."""
    return f"schedule/{schedule_uid}/{rfc3339(slot)}"


def rfc3339(instant: datetime) -> str:
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def jitter_offset(schedule_uid: uuid.UUID, slot: datetime, jitter: timedelta) -> timedelta:
    """A delay in [0, jitter) fixed by (schedule, slot), so every replica computes the same."""
    if jitter <= timedelta(0):
        return timedelta(0)
    digest = hashlib.sha256(f"{schedule_uid}/{rfc3339(slot)}".encode()).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2**64
    return timedelta(microseconds=int(jitter / timedelta(microseconds=1) * fraction))


def fire_time(schedule_uid: uuid.UUID, slot: datetime, jitter: timedelta) -> datetime:
    """When `slot` fires: the slot plus its jitter offset (the slot itself past year 9999)."""
    try:
        return slot + jitter_offset(schedule_uid, slot, jitter)
    except OverflowError:
        return slot


def next_slot_after(spec: ScheduleSpec, after: datetime) -> datetime | None:
    """The first slot strictly after `after`; None when the schedule has no more.

    A slot past the last representable instant (year 9999) is no slot: a stored
    schedule whose interval validation would refuse today (say 10^12 s) ends
    instead of raising in every tick.
    """
    try:
        return _next_slot_after(spec, after)
    except (OverflowError, ValueError):
        return None


def _next_slot_after(spec: ScheduleSpec, after: datetime) -> datetime | None:
    if spec.kind is ScheduleKind.INTERVAL:
        assert spec.every is not None and spec.anchor is not None
        steps = (after - spec.anchor) // spec.every + 1
        return spec.anchor + steps * spec.every
    if spec.kind is ScheduleKind.CRON:
        return next(cron_slots(spec.cron, spec.time_zone, after))
    if spec.kind is ScheduleKind.ONE_OFF:
        assert spec.fire_at is not None
        return spec.fire_at if spec.fire_at > after else None
    return None  # on-event schedules have no clock slots


def first_slot_from(spec: ScheduleSpec, start: datetime) -> datetime | None:
    """The first slot at or after `start`."""
    try:
        before = start - timedelta(microseconds=1)
    except OverflowError:
        return None
    return next_slot_after(spec, before)


def slots_in(spec: ScheduleSpec, start: datetime, end: datetime, limit: int) -> list[datetime]:
    """Slots in [start, end), at most `limit` (callers pass their bound + 1 to detect overflow)."""
    slots: list[datetime] = []
    slot = first_slot_from(spec, start)
    while slot is not None and slot < end and len(slots) < limit:
        slots.append(slot)
        slot = next_slot_after(spec, slot)
    return slots


def cron_slots(expression: str, time_zone: str, after: datetime) -> Iterator[datetime]:
    """Cron fire instants (UTC) strictly after `after`, read in `time_zone`."""
    zone = ZoneInfo(time_zone)
    for local in CronSim(expression, after.astimezone(zone)):
        yield local.astimezone(UTC)


def check_cron(expression: str, time_zone: str) -> str | None:
    """None when valid, else what is wrong (for a field violation). Five fields only: a
    sixth (seconds, which the cron library accepts) would fire every second."""
    fields = expression.split()
    if not expression.startswith("@") and len(fields) != CRON_FIELDS:
        return (
            f"must have {CRON_FIELDS} fields (minute hour day-of-month month day-of-week), "
            f"got {len(fields)}"
        )
    try:
        zone = ZoneInfo(time_zone)
    except (ValueError, KeyError, OSError):
        return None  # the time zone is checked (and reported) on its own
    try:
        next(CronSim(expression, datetime(2030, 1, 1, tzinfo=zone)))
    except (CronSimError, ValueError, StopIteration) as error:
        return f"invalid cron expression {expression!r}: {error}"
    return None


def check_time_zone(time_zone: str) -> str | None:
    try:
        ZoneInfo(time_zone)
    except (ValueError, KeyError, OSError):
        return f"unknown IANA time zone {time_zone!r}"
    return None


@dataclass(slots=True)
class DueSlots:
    """What to do with a schedule's due slots at one tick.

    Attributes:
        fire: slots to fire, oldest first.
        skipped: slots not fired because catch-up fires only the latest.
        missed: slots older than the catch-up window, recorded one by one.
        missed_unrecorded: further missed slots counted but not recorded.
        next_slot: the schedule's next slot after this tick (None: no more).
    """

    fire: list[datetime] = field(default_factory=list)
    skipped: list[datetime] = field(default_factory=list)
    missed: list[datetime] = field(default_factory=list)
    missed_unrecorded: int = 0
    next_slot: datetime | None = None


def due_slots(
    spec: ScheduleSpec,
    policy: SchedulePolicy,
    first_slot: datetime,
    now: datetime,
    *,
    max_fires: int,
    max_recorded_missed: int,
) -> DueSlots:
    """Sort the slots from `first_slot` up to `now` into fire / skipped / missed.

    A slot is due when it is at or before `now`. Due slots older than
    `now - catch_up_window` are missed. Of the rest, fire-once fires the
    latest and skips the others; fire-all fires them all, up to `max_fires`
    (the remainder stays due for the next tick).
    """
    out = DueSlots()
    horizon = now - policy.catch_up_window
    slot: datetime | None = first_slot
    window: list[datetime] = []
    while slot is not None and slot <= now:
        if slot < horizon:
            if len(out.missed) < max_recorded_missed:
                out.missed.append(slot)
            else:
                slot, skipped = _skip_missed(spec, slot, horizon)
                out.missed_unrecorded += skipped
                continue
        elif policy.catch_up is CatchUpMode.FIRE_ALL and len(window) >= max_fires:
            break  # fire the rest next tick
        else:
            window.append(slot)
        slot = next_slot_after(spec, slot)
    if policy.catch_up is CatchUpMode.FIRE_ONCE and window:
        out.fire, out.skipped = window[-1:], window[:-1]
    else:
        out.fire = window
    out.next_slot = slot
    return out


def _skip_missed(
    spec: ScheduleSpec, slot: datetime, horizon: datetime
) -> tuple[datetime | None, int]:
    """Jump past a run of missed slots (at once for intervals); return the next and the count."""
    if spec.kind is ScheduleKind.INTERVAL:
        assert spec.every is not None
        steps = max(1, -((slot - horizon) // spec.every))
        try:
            return slot + steps * spec.every, steps
        except OverflowError:
            return None, steps
    return next_slot_after(spec, slot), 1
