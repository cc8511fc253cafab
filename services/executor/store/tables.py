"""Tables owned by the executor service (prefix `executor_`). Instants are epoch microseconds."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    text,
)

from conveyor_core.db import NAMING_CONVENTION

metadata = MetaData(naming_convention=NAMING_CONVENTION)

# SQLite autoincrements only INTEGER PRIMARY KEY columns.
SEQ = BigInteger().with_variant(Integer, "sqlite")

runs = Table(
    "executor_runs",
    metadata,
    Column("namespace", String(63), primary_key=True),
    # The work order's id: every attempt of an order lands in the same run.
    Column("run_id", String(64), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("state", String(16), nullable=False),
    Column("work_order", String(512), nullable=False),
    Column("job", String(256), nullable=False),
    Column("job_version", BigInteger, nullable=False),
    Column("schedule", String(256), nullable=False),
    Column("slot_time", BigInteger),
    Column("fire_id", String(128), nullable=False),
    Column("correlation_id", String(128), nullable=False),
    Column("trace_id", String(32), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("started_at", BigInteger),
    Column("ended_at", BigInteger),
    Column("attempt", Integer, nullable=False),
    Column("error", JSON),
    Column("work_found", Boolean, nullable=False),
    Column("summary", Text, nullable=False),
    Column("input_tokens", BigInteger, nullable=False),
    Column("output_tokens", BigInteger, nullable=False),
    Column("cost_usd", Float, nullable=False),
    Column("progress_percent", Float),
    Column("progress_message", Text),
    Column("progress_at", BigInteger),
    Index("ix_executor_runs_created", "namespace", "created_at", "run_id"),
    Index("ix_executor_runs_job", "namespace", "job", "created_at", "run_id"),
    Index("ix_executor_runs_schedule", "namespace", "schedule", "created_at", "run_id"),
    Index("ix_executor_runs_work_order", "namespace", "work_order"),
)

attempts = Table(
    "executor_attempts",
    metadata,
    Column("namespace", String(63), primary_key=True),
    Column("run_id", String(64), primary_key=True),
    Column("number", Integer, primary_key=True),
    Column("executor", String(256), nullable=False),
    Column("state", String(16), nullable=False),
    Column("started_at", BigInteger, nullable=False),
    Column("ended_at", BigInteger),
    Column("error", JSON),
    Column("summary", Text, nullable=False),
)

steps = Table(
    "executor_steps",
    metadata,
    Column("seq", SEQ, primary_key=True, autoincrement=True),
    Column("namespace", String(63), nullable=False),
    Column("run_id", String(64), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("name", String(256), nullable=False),
    Column("status", String(16), nullable=False),
    Column("started_at", BigInteger, nullable=False),
    Column("finished_at", BigInteger),
    Column("attributes", JSON, nullable=False),
    Column("error", JSON),
    Index("ix_executor_steps_run", "namespace", "run_id", "seq"),
)

outputs = Table(
    "executor_outputs",
    metadata,
    Column("namespace", String(63), primary_key=True),
    Column("run_id", String(64), primary_key=True),
    Column("output_id", String(32), primary_key=True),
    Column("name", String(256), nullable=False),
    Column("data", LargeBinary, nullable=False),
    Column("truncated", Boolean, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
)

_UNDELIVERED = text("delivered_at IS NULL")

# Journal records waiting for the outbox relay (conveyor_core.outbox).
journal_outbox = Table(
    "executor_journal_outbox",
    metadata,
    Column("seq", SEQ, primary_key=True, autoincrement=True),
    Column("type", String(128), nullable=False),
    Column("namespace", String(63), nullable=False),
    Column("at", BigInteger, nullable=False),
    Column("subjects", JSON, nullable=False),
    Column("correlation_id", String(128), nullable=False),
    Column("trace_id", String(32), nullable=False),
    Column("attributes", JSON, nullable=False),
    Column("delivered_at", BigInteger),
    Index(
        "ix_executor_journal_outbox_undelivered",
        "seq",
        postgresql_where=_UNDELIVERED,
        sqlite_where=_UNDELIVERED,
    ),
)

# -- the workflow runtime (docs/workflows.md). JSON documents are stored as text. --------

workflows = Table(
    "executor_workflows",
    metadata,
    Column("namespace", String(63), primary_key=True),
    Column("workflow", String(63), primary_key=True),
    Column("handlers", Text, nullable=False),
    Column("code_version", String(128), nullable=False),
    Column("queue", String(128), nullable=False),
    Column("iteration_budget", Integer, nullable=False),
    Column("cost_budget_usd", Float, nullable=False),
    Column("paused", Boolean, nullable=False),
    Column("paused_by", String(256), nullable=False),
    Column("pause_reason", Text, nullable=False),
    Column("registered_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

sessions = Table(
    "executor_sessions",
    metadata,
    Column("namespace", String(63), primary_key=True),
    Column("session_id", String(64), primary_key=True),
    Column("workflow", String(63), nullable=False),
    Column("state", String(40), nullable=False),
    Column("trigger", String(63), nullable=False),
    Column("code_version", String(128), nullable=False),
    Column("iterations", Integer, nullable=False),
    Column("handler_runs", Integer, nullable=False),
    Column("input_tokens", BigInteger, nullable=False),
    Column("output_tokens", BigInteger, nullable=False),
    Column("cost_usd", Float, nullable=False),
    Column("follow_up", String(64), nullable=False),
    Column("summary", Text, nullable=False),
    Column("started_at", BigInteger, nullable=False),
    Column("ended_at", BigInteger),
    Index("ix_executor_sessions_workflow", "namespace", "workflow", "started_at", "session_id"),
)

handler_runs = Table(
    "executor_handler_runs",
    metadata,
    Column("namespace", String(63), primary_key=True),
    Column("handler_run_id", String(64), primary_key=True),
    Column("session_id", String(64), nullable=False),
    Column("workflow", String(63), nullable=False),
    Column("handler", String(63), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("phase", String(16), nullable=False),
    # Bumped by every change: the compare-and-set that keeps two drivers of a run apart.
    Column("revision", Integer, nullable=False),
    Column("queue", String(128), nullable=False),
    Column("code_version", String(128), nullable=False),
    Column("topic", String(128), nullable=False),
    Column("events", Text, nullable=False),
    Column("prepared", Text),
    Column("mutation_result", Text),
    Column("emit", Text),
    Column("state_version", BigInteger, nullable=False),
    Column("error", JSON),
    Column("prompt", Text, nullable=False),
    Column("input_tokens", BigInteger, nullable=False),
    Column("output_tokens", BigInteger, nullable=False),
    Column("cost_usd", Float, nullable=False),
    Column("events_published", Integer, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("ended_at", BigInteger),
    Index("ix_executor_handler_runs_created", "namespace", "created_at", "handler_run_id"),
    Index("ix_executor_handler_runs_phase", "namespace", "workflow", "phase"),
    Index("ix_executor_handler_runs_session", "namespace", "session_id"),
)

mutations = Table(
    "executor_mutations",
    metadata,
    Column("namespace", String(63), primary_key=True),
    # One mutation per consumer run: the ledger is keyed by the run.
    Column("handler_run_id", String(64), primary_key=True),
    Column("workflow", String(63), nullable=False),
    Column("handler", String(63), nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("result", Text),
    Column("error", JSON),
    Column("reconciled", String(16), nullable=False),
    Column("resolution", String(16)),
    Column("resolved_by", String(256), nullable=False),
    Column("resolution_reason", Text, nullable=False),
    Column("resolved_at", BigInteger),
    Column("started_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("ended_at", BigInteger),
    Index("ix_executor_mutations_workflow", "namespace", "workflow", "state", "started_at"),
)
