"""Settings of the event-store service (CONVEYOR_EVENTS_*). Every limit is named here."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class EventStoreSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONVEYOR_EVENTS_", frozen=True, extra="ignore")

    max_payload_bytes: int = Field(1024 * 1024, ge=1, description="Largest event payload or state.")
    # Bounded above by the columns that hold them (events_events.title, message_id, ...).
    max_title_length: int = Field(200, ge=1, le=200, description="Longest event title.")
    max_message_id_length: int = Field(256, ge=1, le=256)
    max_content_type_length: int = Field(255, ge=1, le=255, description="Payload media type.")
    max_run_id_length: int = Field(256, ge=1, le=256, description="Consumer run ids.")
    max_actor_length: int = Field(256, ge=1, le=256, description="Who skipped an event.")
    max_reason_length: int = Field(1024, ge=1, description="Why an event was skipped.")
    max_description_length: int = Field(1024, ge=0, description="Topic descriptions.")
    max_commit_topics: int = Field(
        64, ge=1, description="Topics named in one commit (consumed plus published)."
    )
    max_publish_batch: int = Field(1000, ge=1, description="Events in one publish or commit.")
    max_reserve: int = Field(1000, ge=1, description="Events reserved by one call.")
    stale_after_seconds: float = Field(
        7 * 24 * 3600.0, gt=0, description="Pending this long is stale."
    )
    max_journal_batch: int = Field(1000, ge=1, description="Records in one append.")
    max_journal_attributes: int = Field(32, ge=0)
    max_journal_value_length: int = Field(1024, ge=1)
    journal_record_spans: bool = Field(
        False,
        description="A journal.append span per appended record, in the record's trace (the "
        "order's journal entries in its trace view). Off by default: they are 5 of a no-op "
        "SDK task's 9 spans, and exported they cost a fifth of its throughput "
        "(docs/observability.md); the records carry their trace id either way.",
    )
    subscribe_page: int = Field(
        500, ge=1, description="Records a subscription reads per query (bounds its memory)."
    )
    subscribe_poll_seconds: float = Field(
        1.0, gt=0, description="Subscription re-check when no wake-up arrives."
    )
    metrics_refresh_seconds: float = Field(
        15.0,
        gt=0,
        le=3600,
        description="How long the pending / stale / journal-head gauges reuse one database "
        "snapshot, however often /metrics is scraped.",
    )
    metrics_query_timeout_seconds: float = Field(
        2.0, gt=0, le=60, description="How long a scrape waits for a fresh gauge snapshot."
    )
    metrics_max_topics: int = Field(
        1000, ge=1, description="Most topics (the fullest first) the gauges report."
    )
    default_page_size: int = Field(50, ge=1)
    max_page_size: int = Field(1000, ge=1)
