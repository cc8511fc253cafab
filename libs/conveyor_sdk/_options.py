"""Options of tasks: retry policy and durations ("30s", 1.5, timedelta)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import re

__all__ = ["DurationLike", "Retry", "seconds_of"]

DurationLike = float | int | str | dt.timedelta
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def seconds_of(value: DurationLike, what: str = "duration") -> float:
    """Seconds of a duration: a number of seconds, a timedelta, or text like "1h30m", "250ms".

    Raises:
        ValueError: naming `what`, for a negative, infinite or unreadable value.
    """
    if isinstance(value, dt.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool):
        raise ValueError(f"{what} must be a duration, not {value!r}")
    elif isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        parts = _DURATION.findall(text)
        if not text or "".join(n + u for n, u in parts) != text:
            raise ValueError(f'{what} {value!r} is not a duration like "30s", "5m" or "1h30m"')
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    else:
        raise ValueError(f"{what} must be seconds, a timedelta or text like '30s'")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{what} must be a finite duration >= 0, got {value!r}")
    return seconds


@dataclasses.dataclass(frozen=True)
class Retry:
    """How a failed task is retried (the queue applies it, on any executor).

    Args:
        max_attempts: attempts in all, the first included.
        initial_interval: delay before the first retry.
        backoff: growth factor of the delay, >= 1.
        max_interval: upper bound of one delay; None: 100 x initial_interval.
        jitter: fraction of the delay randomly added or removed, in [0, 1].
        non_retryable: exception types that fail the task at once
            (`conveyor.NonRetryable` and its subclasses always do).
    """

    max_attempts: int = 3
    initial_interval: DurationLike = 1.0
    backoff: float = 2.0
    max_interval: DurationLike | None = None
    jitter: float = 0.2
    non_retryable: tuple[type[BaseException], ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.max_attempts, int) or not 1 <= self.max_attempts <= 1000:
            raise ValueError(f"Retry.max_attempts must be 1..1000, got {self.max_attempts!r}")
        if not math.isfinite(self.backoff) or self.backoff < 1:
            raise ValueError(f"Retry.backoff must be >= 1, got {self.backoff!r}")
        if not math.isfinite(self.jitter) or not 0 <= self.jitter <= 1:
            raise ValueError(f"Retry.jitter must be in [0, 1], got {self.jitter!r}")
        seconds_of(self.initial_interval, "Retry.initial_interval")
        if self.max_interval is not None:
            seconds_of(self.max_interval, "Retry.max_interval")
        for kind in self.non_retryable:
            if not (isinstance(kind, type) and issubclass(kind, BaseException)):
                raise ValueError(f"Retry.non_retryable holds {kind!r}, not an exception type")
