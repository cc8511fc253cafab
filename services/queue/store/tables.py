"""Tables owned by the work-order-queue service (prefix `queue_`).

Instants are epoch microseconds (BIGINT): the same arithmetic works in
PostgreSQL and SQLite, so lease-expiry sums stay in SQL on both.
"""

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
    UniqueConstraint,
    Uuid,
    text,
)

from conveyor_core.db import NAMING_CONVENTION

metadata = MetaData(naming_convention=NAMING_CONVENTION)

# INTEGER PRIMARY KEY is SQLite's rowid alias (auto-increment); BIGINT elsewhere.
SEQ = BigInteger().with_variant(Integer, "sqlite")

queues = Table(
    "queue_queues",
    metadata,
    Column("namespace", String(63), primary_key=True),
    Column("queue", String(128), primary_key=True),
    Column("paused", Boolean, nullable=False, server_default=text("false")),
    Column("max_in_flight", Integer, nullable=False, server_default=text("0")),
    Column("max_in_flight_per_key", Integer, nullable=False, server_default=text("0")),
    Column("fair", Boolean, nullable=False, server_default=text("false")),
    Column("rate_tokens", Integer, nullable=False, server_default=text("0")),
    Column("rate_period_us", BigInteger, nullable=False, server_default=text("0")),
    Column("rate_burst", Integer, nullable=False, server_default=text("0")),
    Column("key_rate_tokens", Integer, nullable=False, server_default=text("0")),
    Column("key_rate_period_us", BigInteger, nullable=False, server_default=text("0")),
    Column("key_rate_burst", Integer, nullable=False, server_default=text("0")),
    # Monotonic dispatch counter: orders keys by when they were last served (fairness).
    Column("dispatch_seq", BigInteger, nullable=False, server_default=text("0")),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

queue_keys = Table(
    "queue_keys",
    metadata,
    Column("namespace", String(63), primary_key=True),
    Column("queue", String(128), primary_key=True),
    Column("concurrency_key", String(256), primary_key=True),
    Column("last_served", BigInteger, nullable=False),
)

_QUEUED = text("state = 'QUEUED'")
_UNDELIVERED = text("journaled_at IS NULL")
_LEASED = text("state = 'LEASED'")

work_orders = Table(
    "queue_work_orders",
    metadata,
    Column("seq", SEQ, primary_key=True, autoincrement=True),
    Column("id", Uuid, nullable=False, unique=True),
    Column("namespace", String(63), nullable=False),
    Column("queue", String(128), nullable=False),
    Column("state", String(16), nullable=False),
    Column("priority", Integer, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("content_type", String(255), nullable=False),
    Column("idempotency_key", String(256)),
    Column("concurrency_key", String(256), nullable=False),
    Column("labels", JSON, nullable=False),
    Column("not_before", BigInteger),
    # When the order may next be leased: not_before, or the backoff of a retry.
    Column("available_at", BigInteger, nullable=False),
    Column("deadline_at", BigInteger),
    Column("start_to_close_us", BigInteger, nullable=False),
    Column("heartbeat_timeout_us", BigInteger, nullable=False),
    Column("retry_policy", JSON, nullable=False),
    Column("max_attempts", Integer, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("lease_token", String(64)),
    Column("leased_by", String(256), nullable=False),
    Column("leased_at", BigInteger),
    Column("lease_expires_at", BigInteger),
    Column("lease_duration_us", BigInteger, nullable=False),
    Column("heartbeat_at", BigInteger),
    Column("progress_percent", Float),
    Column("progress_message", Text),
    Column("cancel_requested", Boolean, nullable=False),
    Column("result", LargeBinary),
    Column("result_content_type", String(255)),
    Column("failure", JSON),
    Column("timeout_kind", String(32)),
    Column("correlation_id", String(128), nullable=False),
    Column("traceparent", String(128), nullable=False),
    Column("redrive_count", Integer, nullable=False),
    Column("last_redrive_id", Uuid),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("completed_at", BigInteger),
    # The idempotency guarantee: one order per key per namespace, ever.
    Index(
        "ix_queue_work_orders_idempotency",
        "namespace",
        "idempotency_key",
        unique=True,
        postgresql_where=text("idempotency_key IS NOT NULL"),
        sqlite_where=text("idempotency_key IS NOT NULL"),
    ),
    # The dequeue index: highest priority first, FIFO (seq) within a priority.
    Index(
        "ix_queue_work_orders_dequeue",
        "namespace",
        "queue",
        text("priority DESC"),
        "seq",
        postgresql_where=_QUEUED,
        sqlite_where=_QUEUED,
    ),
    Index(
        "ix_queue_work_orders_in_flight",
        "namespace",
        "queue",
        "concurrency_key",
        postgresql_where=_LEASED,
        sqlite_where=_LEASED,
    ),
    Index(
        "ix_queue_work_orders_lease_expiry",
        "lease_expires_at",
        postgresql_where=_LEASED,
        sqlite_where=_LEASED,
    ),
    Index(
        "ix_queue_work_orders_deadline",
        "deadline_at",
        postgresql_where=text("state = 'QUEUED' AND deadline_at IS NOT NULL"),
        sqlite_where=text("state = 'QUEUED' AND deadline_at IS NOT NULL"),
    ),
    Index("ix_queue_work_orders_listing", "namespace", "queue", "state", "seq"),
)

# Every state change of every order: its history, and the outbox the relay
# journals to the event store (in order of `seq`).
work_order_events = Table(
    "queue_work_order_events",
    metadata,
    Column("seq", SEQ, primary_key=True, autoincrement=True),
    Column("work_order_id", Uuid, nullable=False),
    Column("namespace", String(63), nullable=False),
    Column("queue", String(128), nullable=False),
    Column("from_state", String(16)),
    Column("to_state", String(16), nullable=False),
    Column("at", BigInteger, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("reason", Text, nullable=False),
    Column("actor", String(256), nullable=False),
    Column("timeout_kind", String(32)),
    Column("failure", JSON),
    Column("correlation_id", String(128), nullable=False),
    Column("traceparent", String(128), nullable=False),
    # When the outbox relay appended this row to the journal; NULL until then
    # (store/outbox.py). Set in batches by the relay, never on the hot path.
    Column("journaled_at", BigInteger),
    Index("ix_queue_work_order_events_order", "work_order_id", "seq"),
    # The relay's claim: undelivered rows in seq order. Partial, so it holds
    # only the backlog and stays small however long the history grows.
    Index(
        "ix_queue_work_order_events_undelivered",
        "seq",
        postgresql_where=_UNDELIVERED,
        sqlite_where=_UNDELIVERED,
    ),
)

redrives = Table(
    "queue_redrives",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("namespace", String(63), nullable=False),
    Column("queue", String(128), nullable=False),
    Column("request_id", String(128)),
    Column("requested_by", String(256), nullable=False),
    Column("reason", Text, nullable=False),
    Column("error_type", String(128), nullable=False),
    Column("dead_after", BigInteger),
    Column("max_work_orders", Integer, nullable=False),
    Column("redriven_count", Integer, nullable=False),
    Column("cursor_seq", BigInteger, nullable=False),
    Column("done", Boolean, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    UniqueConstraint("namespace", "queue", "request_id"),
    Index("ix_queue_redrives_listing", "namespace", "queue", "created_at"),
)
