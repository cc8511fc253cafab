"""Settings of the scheduler service (CONVEYOR_SCHEDULER_*). Every limit is named here."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class SchedulerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONVEYOR_SCHEDULER_", frozen=True, extra="ignore")

    min_interval_seconds: float = Field(1.0, gt=0, description="Shortest interval schedule.")
    max_interval_seconds: float = Field(
        366 * 24 * 3600 * 10,
        gt=0,
        le=366 * 24 * 3600 * 1000,
        description="Longest interval schedule (10 years): slots must stay inside year 9999.",
    )
    max_job_priority: int = Field(
        1000, ge=0, description="Highest job priority (the queue's default max_priority)."
    )
    max_endpoints_per_job: int = Field(32, ge=1, description="HTTP endpoints in one job.")
    max_job_definition_bytes: int = Field(
        64 * 1024, ge=1024, description="Largest serialized job definition."
    )
    max_schedules_per_job: int = Field(32, ge=1)
    max_backfill_slots: int = Field(1000, ge=1, description="Slots one backfill call may fire.")
    max_preview_count: int = Field(100, ge=1, description="Fire times one preview returns.")
    catch_up_window_seconds: float = Field(
        300.0, ge=0, description="Default catch-up window: older due slots are missed."
    )
    max_catch_up_fires: int = Field(
        100, ge=1, description="Slots one schedule fires per tick under fire-all catch-up."
    )
    max_recorded_missed_slots: int = Field(
        100, ge=1, description="Missed slots recorded one by one per catch-up; the rest counted."
    )
    max_debounce_seconds: float = Field(3600.0, gt=0)
    max_jitter_seconds: float = Field(3600.0, ge=0)
    default_queue: str = Field("jobs", description="Queue of a job that names none.")
    leader_lease_name: str = Field("scheduler-leader")
    lease_ttl_seconds: float = Field(
        10.0, gt=0, description="Leader lease TTL: a dead leader is replaced within it."
    )
    lease_renew_fraction: float = Field(
        0.3, gt=0, lt=1, description="Renew the lease after this fraction of its TTL."
    )
    lease_retry_seconds: float = Field(
        1.0, gt=0, description="How often a standby replica tries to become leader."
    )
    tick_seconds: float = Field(
        0.05, gt=0, description="Longest wait of the firing loop between due checks."
    )
    fire_batch_size: int = Field(500, ge=1, description="Schedules fired per transaction.")
    submit_batch_size: int = Field(500, ge=1, description="Outbox submits claimed per pass.")
    submit_concurrency: int = Field(64, ge=1, description="Concurrent submit calls of the relay.")
    submit_call_batch_size: int = Field(
        500,
        ge=1,
        description="Orders in one BatchSubmitWorkOrders call (at most the queue's "
        "CONVEYOR_QUEUE_MAX_BATCH_SIZE); each keeps its fire's trace and correlation id.",
    )
    submit_timeout_seconds: float = Field(10.0, gt=0)
    relay_poll_seconds: float = Field(1.0, gt=0)
    relay_backoff_initial_seconds: float = Field(0.2, gt=0)
    relay_backoff_max_seconds: float = Field(30.0, gt=0)
    journal_batch_size: int = Field(500, ge=1, le=1000)
    journal_append_timeout_seconds: float = Field(10.0, gt=0)
    outcome_poll_seconds: float = Field(
        1.0, gt=0, description="How often the leader reads fire outcomes back from the queue."
    )
    outcome_batch_size: int = Field(
        200, ge=1, description="Orders read back per pass (with the poll, caps reads per second)."
    )
    outcome_recheck_seconds: float = Field(
        2.0, gt=0, description="A queued or running fire's order is read again after this long."
    )
    event_poll_seconds: float = Field(
        1.0, gt=0, description="How often on-event schedules read pending counts."
    )
    backoff_multiplier: float = Field(2.0, gt=1, description="Default adaptive growth factor.")
    backoff_max_factor: float = Field(
        16.0, ge=1, description="Default cap of a stretched interval, in base intervals."
    )
    max_backoff_level: int = Field(20, ge=1)
    advisor_history_size: int = Field(20, ge=1, description="Past fires shown to the advisor.")
    advisor_max_next_run_factor: float = Field(
        16.0, ge=1, description="Advisor's latest next run, in base intervals."
    )
    default_page_size: int = Field(50, ge=1)
    max_page_size: int = Field(1000, ge=1)
