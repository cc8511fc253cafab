"""Adaptive backoff: stretch an interval after idle or failed runs, shrink it back on work.

level 0 is the schedule as written. After a run that found no work or failed
the level rises by one (up to the cap); after a run that found work it drops
back to 0. The stretched interval is `base x multiplier^level`, capped at
`max_interval`, plus the schedule's deterministic jitter (timing.jitter_offset).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from conveyor_scheduler.domain.model import FireOutcome


@dataclass(frozen=True, slots=True)
class BackoffStep:
    level: int
    interval: timedelta
    reason: str


def backoff_step(
    level: int,
    outcome: FireOutcome,
    work_found: bool | None,
    *,
    base: timedelta,
    multiplier: float,
    max_interval: timedelta,
    max_level: int,
) -> BackoffStep:
    """The next level and interval after a finished fire, with the reason in words."""
    if outcome is FireOutcome.SUCCEEDED and work_found:
        new_level, why = 0, "run found work: back to the scheduled interval"
    elif outcome is FireOutcome.SUCCEEDED:
        new_level, why = min(level + 1, max_level), "run found no work: stretching"
    else:
        new_level, why = min(level + 1, max_level), f"run {outcome.value}: stretching"
    interval = stretched(base, new_level, multiplier, max_interval)
    return BackoffStep(new_level, interval, f"{why} (level {new_level}, interval {interval})")


def stretched(base: timedelta, level: int, multiplier: float, max_interval: timedelta) -> timedelta:
    if level <= 0:
        return base
    return min(base * (multiplier**level), max(max_interval, base))
