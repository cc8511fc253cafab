"""Well-known protobuf types <-> Python time types, shared by every service's api/convert.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf import duration_pb2, timestamp_pb2


def ts(instant: datetime | None) -> timestamp_pb2.Timestamp | None:
    """A Timestamp for `instant` (None stays None, so the field stays unset)."""
    if instant is None:
        return None
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(instant)
    return out


def dur(delta: timedelta | None) -> duration_pb2.Duration | None:
    """A Duration for `delta` (None stays None, so the field stays unset)."""
    if delta is None:
        return None
    out = duration_pb2.Duration()
    out.FromTimedelta(delta)
    return out


def opt_ts(message: Any, field: str) -> datetime | None:
    """The aware datetime of a Timestamp field, or None when the field is unset."""
    return getattr(message, field).ToDatetime(tzinfo=UTC) if message.HasField(field) else None


def opt_dur(message: Any, field: str) -> timedelta | None:
    """The timedelta of a Duration field, or None when the field is unset."""
    return getattr(message, field).ToTimedelta() if message.HasField(field) else None
