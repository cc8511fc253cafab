"""Well-known protobuf types <-> Python time types, shared by every service's api/convert.py.

Reading a request's Timestamp or Duration never raises anything but
InvalidArgument: a Timestamp outside year 0001-9999 or with nanos outside
[0, 10^9), and a Duration outside the +/-10,000 years protobuf defines (or with
nanos out of range or of the other sign) name the field in a field violation.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, overload

from google.protobuf import duration_pb2, timestamp_pb2

from conveyor_core.errors import FieldViolation, InvalidArgument

#: Protobuf's bounds: Timestamps span 0001-01-01 to 9999-12-31, Durations +/-10,000 years.
MIN_TIMESTAMP_SECONDS = -62_135_596_800
MAX_TIMESTAMP_SECONDS = 253_402_300_799
MAX_DURATION_SECONDS = 315_576_000_000
NANOS_PER_SECOND = 1_000_000_000


@overload
def ts(instant: datetime) -> timestamp_pb2.Timestamp: ...
@overload
def ts(instant: None) -> None: ...
@overload
def ts(instant: datetime | None) -> timestamp_pb2.Timestamp | None: ...
def ts(instant: datetime | None) -> timestamp_pb2.Timestamp | None:
    """A Timestamp for `instant` (None stays None, so the field stays unset)."""
    if instant is None:
        return None
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(instant)
    return out


@overload
def dur(delta: timedelta) -> duration_pb2.Duration: ...
@overload
def dur(delta: None) -> None: ...
@overload
def dur(delta: timedelta | None) -> duration_pb2.Duration | None: ...
def dur(delta: timedelta | None) -> duration_pb2.Duration | None:
    """A Duration for `delta` (None stays None, so the field stays unset)."""
    if delta is None:
        return None
    out = duration_pb2.Duration()
    out.FromTimedelta(delta)
    return out


def opt_ts(message: Any, field: str, path: str | None = None) -> datetime | None:
    """The aware datetime of a Timestamp field, or None when the field is unset.

    Raises:
        InvalidArgument: naming `path` (default `field`) when the value is out of range.
    """
    if not message.HasField(field):
        return None
    value: timestamp_pb2.Timestamp = getattr(message, field)
    if not MIN_TIMESTAMP_SECONDS <= value.seconds <= MAX_TIMESTAMP_SECONDS:
        raise InvalidArgument(
            FieldViolation(path or field, "must be between 0001-01-01 and 9999-12-31 UTC")
        )
    if not 0 <= value.nanos < NANOS_PER_SECOND:
        raise InvalidArgument(FieldViolation(path or field, "nanos must be in [0, 10^9)"))
    return value.ToDatetime(tzinfo=UTC)


def opt_dur(message: Any, field: str, path: str | None = None) -> timedelta | None:
    """The timedelta of a Duration field, or None when the field is unset.

    Raises:
        InvalidArgument: naming `path` (default `field`) when the value is out of range.
    """
    if not message.HasField(field):
        return None
    value: duration_pb2.Duration = getattr(message, field)
    if not -MAX_DURATION_SECONDS <= value.seconds <= MAX_DURATION_SECONDS:
        raise InvalidArgument(
            FieldViolation(path or field, f"must be within +/-{MAX_DURATION_SECONDS} seconds")
        )
    if not -NANOS_PER_SECOND < value.nanos < NANOS_PER_SECOND or (value.seconds * value.nanos < 0):
        raise InvalidArgument(
            FieldViolation(path or field, "nanos must be in (-10^9, 10^9), of the sign of seconds")
        )
    return value.ToTimedelta()
