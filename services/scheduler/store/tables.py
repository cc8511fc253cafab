"""Tables owned by the scheduler service (prefix `scheduler_`).

Instants are epoch microseconds (BIGINT) as in every Conveyor service.
`scheduler_fires` has one row per (schedule, slot): the unique constraint is
the last line of defence against a double fire, behind the leader lease and
the fencing check (`scheduler_leader`).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)

from conveyor_core.db import NAMING_CONVENTION

metadata = MetaData(naming_convention=NAMING_CONVENTION)

# INTEGER PRIMARY KEY is SQLite's rowid alias (auto-increment); BIGINT elsewhere.
SEQ = BigInteger().with_variant(Integer, "sqlite")

jobs = Table(
    "scheduler_jobs",
    metadata,
    Column("namespace", String(63), primary_key=True),
    Column("job_id", String(63), primary_key=True),
    Column("version", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

job_versions = Table(
    "scheduler_job_versions",
    metadata,
    Column("namespace", String(63), primary_key=True),
    Column("job_id", String(63), primary_key=True),
    Column("version", BigInteger, primary_key=True),
    # The serialized definition (conveyor.scheduler.v1.Job without name/version/times).
    Column("document", LargeBinary, nullable=False),
    Column("queue", String(128), nullable=False),
    Column("priority", Integer, nullable=False),
    Column("adaptive", JSON, nullable=False),
    Column("endpoints", JSON, nullable=False),
    Column("created_at", BigInteger, nullable=False),
)

schedules = Table(
    "scheduler_schedules",
    metadata,
    Column("uid", Uuid, primary_key=True),
    Column("namespace", String(63), nullable=False),
    Column("job_id", String(63), nullable=False),
    Column("schedule_id", String(63), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("spec", JSON, nullable=False),
    Column("policy", JSON, nullable=False),
    Column("paused", Boolean, nullable=False, server_default=text("false")),
    Column("next_slot_at", BigInteger, nullable=True),
    Column("next_fire_at", BigInteger, nullable=True),
    Column("backoff_level", Integer, nullable=False, server_default=text("0")),
    Column("next_endpoints", JSON, nullable=False),
    # On-event schedules: when pending events were first seen (debounce start).
    Column("pending_since", BigInteger, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    UniqueConstraint("namespace", "job_id", "schedule_id"),
    Index(
        "ix_scheduler_schedules_due",
        "next_fire_at",
        postgresql_where=text("NOT paused AND next_fire_at IS NOT NULL"),
        sqlite_where=text("NOT paused AND next_fire_at IS NOT NULL"),
    ),
)

fires = Table(
    "scheduler_fires",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("schedule_uid", Uuid, nullable=False),
    Column("seq", BigInteger, nullable=False),  # history order (newest first), per schedule
    Column("kind", String(16), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("slot_at", BigInteger, nullable=False),
    Column("fired_at", BigInteger, nullable=False),
    Column("job_version", BigInteger, nullable=False),
    Column("submitted_at", BigInteger, nullable=True),
    Column("finished_at", BigInteger, nullable=True),
    Column("checked_at", BigInteger, nullable=True),  # last read back from the queue
    Column("work_order", String(256), nullable=False, server_default=""),
    Column("work_found", Boolean, nullable=True),
    Column("reason", Text, nullable=False, server_default=""),
    Column("error_type", String(128), nullable=False, server_default=""),
    Column("endpoints", JSON, nullable=False),
    Column("correlation_id", String(128), nullable=False, server_default=""),
    UniqueConstraint("schedule_uid", "slot_at"),
    Index("ix_scheduler_fires_schedule_uid_seq", "schedule_uid", "seq"),
    Index(
        "ix_scheduler_fires_active",
        "checked_at",
        postgresql_where=text("outcome IN ('submitted', 'running')"),
        sqlite_where=text("outcome IN ('submitted', 'running')"),
    ),
)

# Submits to the queue, written in the fire's transaction; the relay delivers them.
submit_outbox = Table(
    "scheduler_submit_outbox",
    metadata,
    Column("seq", SEQ, primary_key=True, autoincrement=True),
    Column("fire_id", Uuid, nullable=False),
    # "submit": parent is the queue, request a serialized conveyor.queue.v1.WorkOrderSpec;
    # "cancel": parent is the work order to cancel (overlap policy cancel-other).
    Column("action", String(8), nullable=False),
    Column("parent", String(256), nullable=False),
    Column("request", LargeBinary, nullable=False),
    # A buffered fire's submit waits (held) until the running fire of its schedule ends.
    Column("held", Boolean, nullable=False, server_default=text("false")),
    Column("correlation_id", String(128), nullable=False),
    Column("traceparent", String(64), nullable=False),
    Column("fencing_token", BigInteger, nullable=False),
    Column("slot_at", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("delivered_at", BigInteger, nullable=True),
    Index(
        "ix_scheduler_submit_outbox_undelivered",
        "seq",
        postgresql_where=text("delivered_at IS NULL AND NOT held"),
        sqlite_where=text("delivered_at IS NULL AND NOT held"),
    ),
)

# Journal records (schedule fired / slot skipped / slot missed), delivered by OutboxRelay.
journal_outbox = Table(
    "scheduler_journal_outbox",
    metadata,
    Column("seq", SEQ, primary_key=True, autoincrement=True),
    Column("type", String(64), nullable=False),
    Column("namespace", String(63), nullable=False),
    Column("subjects", JSON, nullable=False),
    Column("attributes", JSON, nullable=False),
    Column("correlation_id", String(128), nullable=False),
    Column("traceparent", String(64), nullable=False),
    Column("at", BigInteger, nullable=False),
    Column("journaled_at", BigInteger, nullable=True),
    Index(
        "ix_scheduler_journal_outbox_undelivered",
        "seq",
        postgresql_where=text("journaled_at IS NULL"),
        sqlite_where=text("journaled_at IS NULL"),
    ),
)

policy_decisions = Table(
    "scheduler_policy_decisions",
    metadata,
    Column("seq", SEQ, primary_key=True, autoincrement=True),
    Column("schedule_uid", Uuid, nullable=False),
    Column("fire_id", Uuid, nullable=True),
    Column("policy", String(16), nullable=False),
    Column("next_fire_at", BigInteger, nullable=True),
    Column("backoff_level", Integer, nullable=False),
    Column("reason", Text, nullable=False),
    Column("details", JSON, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Index("ix_scheduler_policy_decisions_schedule_uid_seq", "schedule_uid", "seq"),
)

# Highest fencing token seen: a firing transaction of a deposed leader (lower token) aborts.
leader = Table(
    "scheduler_leader",
    metadata,
    Column("name", String(63), primary_key=True),
    Column("fencing_token", BigInteger, nullable=False),
)
