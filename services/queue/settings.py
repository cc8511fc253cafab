"""Settings of the work-order-queue service (CONVEYOR_QUEUE_*). Every limit is named here."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class QueueSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONVEYOR_QUEUE_", frozen=True, extra="ignore")

    max_payload_bytes: int = Field(1024 * 1024, ge=1, description="Largest payload or result.")
    max_priority: int = Field(1000, ge=0, description="Priorities range over [0, max_priority].")
    max_idempotency_key_length: int = Field(256, ge=1)
    max_concurrency_key_length: int = Field(256, ge=1)
    max_labels: int = Field(32, ge=0)
    max_label_length: int = Field(256, ge=1)
    max_failure_message_length: int = Field(4096, ge=1)
    max_batch_size: int = Field(1000, ge=1, description="Items in one batch submit/complete.")
    max_lease_batch: int = Field(1000, ge=1, description="Orders in one lease call.")
    max_lease_queues: int = Field(32, ge=1, description="Queues named in one lease call.")
    default_lease_seconds: float = Field(30.0, gt=0)
    max_lease_seconds: float = Field(3600.0, gt=0)
    max_wait_seconds: float = Field(60.0, ge=0, description="Longest long-poll of a lease call.")
    poll_interval_seconds: float = Field(
        1.0, gt=0, description="Long-poll re-check period when no wake-up arrives."
    )
    default_max_attempts: int = Field(3, ge=1)
    max_attempts_limit: int = Field(1000, ge=1)
    max_retry_interval_seconds: float = Field(7 * 24 * 3600.0, gt=0)
    sweep_interval_seconds: float = Field(0.5, gt=0, description="Lease/deadline sweeper period.")
    sweep_batch: int = Field(500, ge=1)
    redrive_chunk_size: int = Field(500, ge=1, description="Orders redriven per transaction.")
    fair_scan_limit: int = Field(
        2000, ge=1, description="Candidates examined per lease of a fair/per-key-limited queue."
    )
    counter_flush_seconds: float = Field(
        1.0, gt=0, description="How often rate counters are flushed to the shared counters."
    )
    config_cache_seconds: float = Field(
        1.0, ge=0, description="How long a replica trusts its copy of a queue's settings."
    )
    hot_connections: int = Field(
        4,
        ge=0,
        le=64,
        description="PostgreSQL connections that submit and plain lease, and as many that "
        "batch complete, keep checked out of the pool between their statements (at most a "
        "quarter of CONVEYOR_DB_POOL_SIZE each); 0: a pool checkout per statement.",
    )
    hot_connection_seconds: float = Field(
        1800.0,
        gt=0,
        description="A kept connection goes back to the pool once the hot statements have "
        "used it this long, so the pool recycles it (its own recycle age is 1800 s).",
    )
    metrics_refresh_seconds: float = Field(
        15.0,
        gt=0,
        le=3600,
        description="How long the depth / in-flight / oldest-age gauges reuse one database "
        "snapshot, however often /metrics is scraped.",
    )
    metrics_query_timeout_seconds: float = Field(
        2.0, gt=0, le=60, description="How long a scrape waits for a fresh gauge snapshot."
    )
    metrics_max_queues: int = Field(
        1000, ge=1, description="Most queues (the most loaded first) the gauges report."
    )
    stats_window_seconds: int = Field(300, ge=60, le=3600)
    stats_wait_sample: int = Field(2000, ge=10)
    default_page_size: int = Field(50, ge=1)
    max_page_size: int = Field(1000, ge=1)
    relay_batch_size: int = Field(
        500,
        ge=1,
        le=1000,
        description="Journal records the outbox relay appends per call "
        "(at most the event store's CONVEYOR_EVENTS_MAX_JOURNAL_BATCH).",
    )
    relay_poll_seconds: float = Field(
        1.0, gt=0, description="Relay re-check of the outbox when no wake-up arrives."
    )
    relay_wake_interval_seconds: float = Field(
        0.01,
        gt=0,
        le=10,
        description="While writes keep coming, the outbox relay is woken at most once per "
        "this many seconds (the first write after a quiet spell wakes it at once): each "
        "pass costs a claim, an append and a mark whatever it carries.",
    )
    relay_backoff_initial_seconds: float = Field(
        0.2, gt=0, description="First retry delay after a failed journal append."
    )
    relay_backoff_max_seconds: float = Field(
        30.0, gt=0, description="Longest retry delay after failed journal appends."
    )
    relay_append_timeout_seconds: float = Field(
        10.0, gt=0, description="Deadline of one journal append."
    )
