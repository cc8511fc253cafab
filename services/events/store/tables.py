"""Tables owned by the event-store service (prefix `events_`). Instants are epoch microseconds."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from conveyor_core.db import NAMING_CONVENTION

metadata = MetaData(naming_convention=NAMING_CONVENTION)

topics = Table(
    "events_topics",
    metadata,
    Column("namespace", String(63), primary_key=True),
    Column("topic", String(128), primary_key=True),
    Column("workflow", String(128), nullable=False),
    Column("description", Text, nullable=False),
    # Last sequence handed out. Publishing locks this row until commit, so
    # sequences become visible in commit order with no gaps.
    Column("last_sequence", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Index("ix_events_topics_workflow", "namespace", "workflow", "topic"),
)

_PENDING = text("status = 'PENDING'")
_RESERVED = text("status = 'RESERVED'")

events = Table(
    "events_events",
    metadata,
    Column("namespace", String(63), primary_key=True),
    Column("topic", String(128), primary_key=True),
    Column("sequence", BigInteger, primary_key=True),
    Column("message_id", String(256), nullable=False),
    Column("title", String(200), nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("content_type", String(255), nullable=False),
    Column("correlation_id", String(128), nullable=False),
    Column("status", String(16), nullable=False),
    Column("published_at", BigInteger, nullable=False),
    Column("reserved_by", String(256)),
    Column("reserved_at", BigInteger),
    Column("consumed_by", String(256)),
    Column("consumed_at", BigInteger),
    Column("skipped_by", String(256)),
    Column("skip_reason", Text),
    Column("skipped_at", BigInteger),
    UniqueConstraint("namespace", "topic", "message_id"),
    # The oldest pending events of a topic (reserve) are the status index's
    # (namespace, topic, 'PENDING') prefix, in sequence order; no separate
    # pending index (dropped in migration 0002: every publish paid for it).
    Index(
        "ix_events_events_reserved",
        "namespace",
        "topic",
        "reserved_by",
        postgresql_where=_RESERVED,
        sqlite_where=_RESERVED,
    ),
    Index(
        "ix_events_events_stale",
        "namespace",
        "published_at",
        postgresql_where=_PENDING,
        sqlite_where=_PENDING,
    ),
    Index("ix_events_events_status", "namespace", "topic", "status", "sequence"),
)

states = Table(
    "events_states",
    metadata,
    Column("namespace", String(63), primary_key=True),
    Column("handler", String(128), primary_key=True),
    Column("version", BigInteger, nullable=False),
    Column("data", LargeBinary, nullable=False),
    Column("content_type", String(255), nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

# One row per committed run: a repeated Commit with the same run id returns this.
commits = Table(
    "events_commits",
    metadata,
    Column("namespace", String(63), primary_key=True),
    Column("run_id", String(256), primary_key=True),
    Column("result", JSON, nullable=False),
    Column("created_at", BigInteger, nullable=False),
)

# The journal: positions come from journal_head, locked until commit, so they
# are gap-free in commit order and a reader by position never misses a record.
journal = Table(
    "events_journal",
    metadata,
    Column("position", BigInteger, primary_key=True, autoincrement=False),
    Column("id", String(256), nullable=False, unique=True),
    Column("type", String(128), nullable=False),
    Column("namespace", String(63), nullable=False),
    Column("subjects", JSON, nullable=False),
    Column("correlation_id", String(128), nullable=False),
    Column("trace_id", String(32), nullable=False),
    Column("time", BigInteger, nullable=False),
    Column("attributes", JSON, nullable=False),
    Index("ix_events_journal_namespace", "namespace", "position"),
    Index("ix_events_journal_correlation", "correlation_id", "position"),
)

# Subject ids of journal records, one row per subject, for the subject filter.
journal_subjects = Table(
    "events_journal_subjects",
    metadata,
    Column("position", BigInteger, primary_key=True),
    Column("kind", String(64), primary_key=True),
    Column("value", String(256), nullable=False),
    Index("ix_events_journal_subjects_value", "value", "position"),
)

journal_head = Table(
    "events_journal_head",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("last_position", BigInteger, nullable=False),
)
