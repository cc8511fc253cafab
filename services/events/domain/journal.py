"""The journal's domain: records, filters, pages and the rules a record must follow.

Pure data and validation: no I/O, nothing from SQLAlchemy or protobuf. Limits
come from `EventStoreSettings`; column sizes of `events_journal` bound the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from conveyor_core.errors import FieldViolation
from conveyor_core.validators import name_pattern
from conveyor_events.settings import EventStoreSettings

#: Coordination channel notified after every append that added records.
JOURNAL_CHANNEL = "journal"

NAMESPACE_ID = name_pattern(r"[a-z][a-z0-9-]{0,62}")
RECORD_TYPE = name_pattern(r"[a-z][a-z0-9_-]*(\.[a-z0-9_-]+)*")
SUBJECT_KIND = name_pattern(r"[a-z][a-z0-9_]{0,63}")
TRACE_ID = name_pattern(r"[0-9a-f]{32}")

MAX_ID_LENGTH = 256
MAX_TYPE_LENGTH = 128
MAX_CORRELATION_ID_LENGTH = 128
MAX_SUBJECT_VALUE_LENGTH = 256
MAX_ATTRIBUTE_KEY_LENGTH = 64


@dataclass(frozen=True, slots=True)
class JournalDraft:
    """A record as an appender sends it: no position yet; `time` None means "now"."""

    id: str
    type: str
    namespace: str
    subjects: Mapping[str, str] = field(default_factory=dict)
    correlation_id: str = ""
    trace_id: str = ""
    time: datetime | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class JournalRecord:
    """A stored record with its global position (gap-free in commit order)."""

    position: int
    id: str
    type: str
    namespace: str
    subjects: Mapping[str, str]
    correlation_id: str
    trace_id: str
    time: datetime
    attributes: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class JournalFilter:
    """Which records a reader wants; empty fields match everything."""

    namespace: str = ""
    type_prefix: str = ""
    subject: str = ""
    correlation_id: str = ""


@dataclass(frozen=True, slots=True)
class JournalPage:
    """Records after a position, and where to continue (the last position examined)."""

    records: Sequence[JournalRecord]
    next_position: int
    #: The head when it was read (every record at or below it committed).
    head_position: int = 0


def draft_violations(
    draft: JournalDraft, settings: EventStoreSettings, prefix: str
) -> list[FieldViolation]:
    """Every rule `draft` breaks, with field paths under `prefix` (e.g. "records[3].")."""
    violations = _identity_violations(draft, prefix)
    violations += _map_violations(
        draft.subjects,
        f"{prefix}subjects",
        settings.max_journal_attributes,
        lambda key: SUBJECT_KIND.match(key) is not None,
        "must match [a-z][a-z0-9_]{0,63}",
        min(settings.max_journal_value_length, MAX_SUBJECT_VALUE_LENGTH),
    )
    violations += _map_violations(
        draft.attributes,
        f"{prefix}attributes",
        settings.max_journal_attributes,
        lambda key: 0 < len(key) <= MAX_ATTRIBUTE_KEY_LENGTH,
        f"must be 1-{MAX_ATTRIBUTE_KEY_LENGTH} characters",
        settings.max_journal_value_length,
    )
    return violations


def _identity_violations(draft: JournalDraft, prefix: str) -> list[FieldViolation]:
    checks = [
        ("id", not draft.id, "required: the record's idempotency id"),
        ("id", len(draft.id) > MAX_ID_LENGTH, f"longer than {MAX_ID_LENGTH} characters"),
        ("type", not draft.type, "required, e.g. queue.work_order.leased"),
        ("type", len(draft.type) > MAX_TYPE_LENGTH, f"longer than {MAX_TYPE_LENGTH} characters"),
        (
            "type",
            bool(draft.type) and RECORD_TYPE.match(draft.type) is None,
            "must be dotted lowercase words, e.g. queue.work_order.leased",
        ),
        ("namespace", not draft.namespace, "required"),
        (
            "namespace",
            bool(draft.namespace) and NAMESPACE_ID.match(draft.namespace) is None,
            "must match [a-z][a-z0-9-]{0,62}",
        ),
        (
            "correlation_id",
            len(draft.correlation_id) > MAX_CORRELATION_ID_LENGTH,
            f"longer than {MAX_CORRELATION_ID_LENGTH} characters",
        ),
        (
            "trace_id",
            bool(draft.trace_id) and TRACE_ID.match(draft.trace_id) is None,
            "must be 32 lowercase hex digits (a W3C trace id) or empty",
        ),
    ]
    return [FieldViolation(f"{prefix}{name}", text) for name, bad, text in checks if bad]


def _map_violations(
    values: Mapping[str, str],
    path: str,
    max_entries: int,
    key_ok: Callable[[str], bool],
    key_rule: str,
    max_value_length: int,
) -> list[FieldViolation]:
    violations = []
    if len(values) > max_entries:
        violations.append(FieldViolation(path, f"at most {max_entries} entries"))
    for key, value in values.items():
        if not key_ok(key):
            violations.append(FieldViolation(f"{path}[{key!r}]", f"key {key_rule}"))
        if len(value) > max_value_length:
            violations.append(
                FieldViolation(f"{path}[{key!r}]", f"value longer than {max_value_length}")
            )
    return violations


def filter_violations(journal_filter: JournalFilter, prefix: str) -> list[FieldViolation]:
    """Rules of a filter: the same shapes the records themselves must have."""
    f = journal_filter
    checks = [
        (
            "namespace",
            bool(f.namespace) and NAMESPACE_ID.match(f.namespace) is None,
            "must match [a-z][a-z0-9-]{0,62}",
        ),
        ("type_prefix", len(f.type_prefix) > MAX_TYPE_LENGTH, f"longer than {MAX_TYPE_LENGTH}"),
        (
            "subject",
            len(f.subject) > MAX_SUBJECT_VALUE_LENGTH,
            f"longer than {MAX_SUBJECT_VALUE_LENGTH}",
        ),
        (
            "correlation_id",
            len(f.correlation_id) > MAX_CORRELATION_ID_LENGTH,
            f"longer than {MAX_CORRELATION_ID_LENGTH}",
        ),
    ]
    return [FieldViolation(f"{prefix}{name}", text) for name, bad, text in checks if bad]


def position_violations(after_position: int, field_name: str) -> list[FieldViolation]:
    if after_position < 0:
        return [FieldViolation(field_name, "must not be negative")]
    return []
