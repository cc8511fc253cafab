"""Settings of the event-store service (CONVEYOR_EVENTS_*). Every limit is named here."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class EventStoreSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONVEYOR_EVENTS_", frozen=True, extra="ignore")

    max_payload_bytes: int = Field(1024 * 1024, ge=1, description="Largest event payload or state.")
    max_title_length: int = Field(200, ge=1, description="Longest event title.")
    max_message_id_length: int = Field(256, ge=1)
    max_publish_batch: int = Field(1000, ge=1, description="Events in one publish or commit.")
    max_reserve: int = Field(1000, ge=1, description="Events reserved by one call.")
    stale_after_seconds: float = Field(
        7 * 24 * 3600.0, gt=0, description="Pending this long is stale."
    )
    max_journal_batch: int = Field(1000, ge=1, description="Records in one append.")
    max_journal_attributes: int = Field(32, ge=0)
    max_journal_value_length: int = Field(1024, ge=1)
    subscribe_page: int = Field(
        500, ge=1, description="Records a subscription reads per query (bounds its memory)."
    )
    subscribe_poll_seconds: float = Field(
        1.0, gt=0, description="Subscription re-check when no wake-up arrives."
    )
    default_page_size: int = Field(50, ge=1)
    max_page_size: int = Field(1000, ge=1)
