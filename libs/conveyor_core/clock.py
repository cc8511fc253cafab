"""Injectable time: code asks a Clock for `now`, so tests move time instead of sleeping."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current instant, timezone-aware UTC."""
        ...


class SystemClock:
    """Wall-clock time."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that moves only when told to (tests)."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2030, 1, 1, tzinfo=UTC)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, delta: timedelta | float) -> datetime:
        if not isinstance(delta, timedelta):
            delta = timedelta(seconds=delta)
        with self._lock:
            self._now += delta
            return self._now

    def set(self, instant: datetime) -> None:
        with self._lock:
            self._now = instant


def to_micros(instant: datetime) -> int:
    """Epoch microseconds of an aware datetime (how stores keep instants portably)."""
    delta = instant - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


def opt_from_micros(micros: int | None) -> datetime | None:
    """from_micros for a nullable column."""
    return None if micros is None else from_micros(micros)


def opt_to_micros(instant: datetime | None) -> int | None:
    """to_micros for a nullable column."""
    return None if instant is None else to_micros(instant)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
