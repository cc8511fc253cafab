"""Settings of the executor service (CONVEYOR_EXECUTOR_*). Every limit is named here."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from conveyor_executor.runners.settings import RunnerSettings

_R = RunnerSettings()  # the runners' defaults are the executor's defaults


class ExecutorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONVEYOR_EXECUTOR_", frozen=True, extra="ignore")

    # -- worker pool ---------------------------------------------------------------
    namespace: str = Field("default", description="Namespace whose queues the pool leases from.")
    queues: tuple[str, ...] = Field(
        ("jobs",), description="Queue ids leased from (JSON list), highest priority first."
    )
    concurrency: int = Field(8, ge=1, le=1000, description="Runs executed at once.")
    max_lease_batch: int = Field(
        32, ge=1, le=1000, description="Most orders leased per call (also bounded by free slots)."
    )
    lease_wait_seconds: float = Field(
        10.0, ge=0, le=60, description="Long-poll wait of one lease call."
    )
    lease_seconds: float = Field(
        60.0, gt=0, le=3600, description="Lease duration asked for and renewed by heartbeats."
    )
    heartbeat_interval_seconds: float = Field(
        20.0, gt=0, description="Time between heartbeats; must be below lease_seconds."
    )
    drain_timeout_seconds: float = Field(
        30.0, ge=0, le=3600, description="On shutdown: how long in-flight runs may finish."
    )
    abort_grace_seconds: float = Field(
        5.0,
        ge=0,
        le=600,
        description="How long an aborted run may take to stop before its task is cancelled.",
    )
    queue_call_timeout_seconds: float = Field(
        10.0, gt=0, description="Deadline of heartbeat, complete and fail calls to the queue."
    )
    queue_report_attempts: int = Field(
        5, ge=1, le=100, description="Tries of completing or failing an order on transient errors."
    )
    queue_report_backoff_seconds: float = Field(
        0.2, gt=0, description="First pause between those tries (doubling)."
    )
    record_batch_size: int = Field(
        256,
        ge=1,
        le=1000,
        description="Most attempt starts, ends or completions written in one transaction or call.",
    )
    lease_error_backoff_seconds: float = Field(
        1.0, gt=0, description="Pause after a failed lease call before the next one."
    )
    worker_identity: str = Field(
        "", description="Recorded on leased orders; empty: host name and process id."
    )
    # -- metrics -------------------------------------------------------------------
    stalled_run_seconds: float = Field(
        900.0,
        gt=0,
        description="An attempt with no progress report (or none since it started) for this "
        "long counts in conveyor_executor_runs_stalled.",
    )
    metrics_refresh_seconds: float = Field(
        15.0,
        gt=0,
        le=3600,
        description="How long the blocked-runs gauges reuse one database snapshot.",
    )
    metrics_query_timeout_seconds: float = Field(
        2.0, gt=0, le=60, description="How long a scrape waits for a fresh gauge snapshot."
    )
    metrics_max_workflows: int = Field(
        1000, ge=1, description="Most workflows (the most blocked first) the gauges report."
    )
    # -- runners (see conveyor_executor.runners.RunnerSettings for each meaning) -------
    workspace_root: Path = Field(
        Path("data/workspaces"), description="Parent directory of command jobs' workspaces."
    )
    http_call_timeout_seconds: float = Field(_R.http_call_timeout_seconds, gt=0)
    http_max_call_timeout_seconds: float = Field(_R.http_max_call_timeout_seconds, gt=0)
    http_connect_timeout_seconds: float = Field(_R.http_connect_timeout_seconds, gt=0)
    http_client_pools: int = Field(
        16,
        ge=1,
        le=256,
        description="HTTP clients (connection pools) the runs use in turn (SharedHttpClient).",
    )
    http_transport: Literal["httpcore", "keepalive"] = Field(
        "keepalive",
        description="httpcore (httpx's own) or keepalive (runners/http_transport.py).",
    )
    retry_initial_interval_seconds: float = Field(_R.retry_initial_interval_seconds, gt=0)
    retry_backoff_coefficient: float = Field(_R.retry_backoff_coefficient, ge=1)
    retry_maximum_interval_seconds: float = Field(_R.retry_maximum_interval_seconds, gt=0)
    retry_jitter: float = Field(_R.retry_jitter, ge=0, le=1)
    retry_maximum_attempts: int = Field(_R.retry_maximum_attempts, ge=1)
    retry_after_max_seconds: float = Field(_R.retry_after_max_seconds, ge=0)
    max_parallel: int = Field(_R.max_parallel, ge=1)
    breaker_failure_threshold: int = Field(_R.breaker_failure_threshold, ge=1)
    breaker_cool_down_seconds: float = Field(_R.breaker_cool_down_seconds, gt=0)
    breaker_trial_timeout_seconds: float = Field(_R.breaker_trial_timeout_seconds, gt=0)
    max_recorded_body_bytes: int = Field(
        _R.max_recorded_body_bytes, ge=1, description="Body bytes kept in an HTTP call's step."
    )
    max_response_bytes: int = Field(_R.max_response_bytes, ge=1)
    scrub_patterns: tuple[str, ...] = Field(
        _R.scrub_patterns, description="Regexes (JSON list) scrubbed from recorded calls."
    )
    command_timeout_seconds: float = Field(_R.command_timeout_seconds, gt=0)
    command_max_timeout_seconds: float = Field(_R.command_max_timeout_seconds, gt=0)
    check_timeout_seconds: float = Field(_R.check_timeout_seconds, gt=0)
    kill_grace_seconds: float = Field(_R.kill_grace_seconds, ge=0)
    max_output_bytes: int = Field(
        _R.max_output_bytes, ge=1, description="Output bytes kept per stream; longer is truncated."
    )
    max_iterations: int = Field(_R.max_iterations, ge=1)
    default_max_iterations: int = Field(_R.default_max_iterations, ge=1)
    command_path: str = Field(_R.command_path, description="PATH of commands' environment.")
    feedback_max_bytes: int = Field(_R.feedback_max_bytes, ge=0)
    # -- secrets -------------------------------------------------------------------
    secrets_dir: Path | None = Field(
        None, description="Directory of secret files (file name = secret name); unset: none."
    )
    secrets_env_prefix: str = Field(
        "CONVEYOR_SECRET_",
        description="Secrets also come from environment variables <prefix><NAME> "
        "(name upper-cased, - as _); empty: none.",
    )
    # -- integrations --------------------------------------------------------------
    webhook_timeout_seconds: float = Field(
        10.0, gt=0, description="Deadline of a completion notification webhook call."
    )
    # -- API and records -----------------------------------------------------------
    default_page_size: int = Field(50, ge=1)
    max_page_size: int = Field(1000, ge=1)
    watch_queue_size: int = Field(
        256, ge=1, description="Updates buffered per WatchRun stream; progress is dropped past it."
    )
    watch_poll_seconds: float = Field(
        1.0, gt=0, description="WatchRun re-reads a run running elsewhere this often."
    )
    max_summary_length: int = Field(1024, ge=1, description="Longest run summary kept.")
    max_failure_message_length: int = Field(
        2048, ge=1, description="Longest failure message kept and sent to the queue."
    )
    max_invocation_bytes: int = Field(
        1024 * 1024, ge=1, description="Largest invocation payload (JobInvocation) accepted."
    )
    # -- workflow runtime (docs/workflows.md) ----------------------------------------
    max_event_bytes: int = Field(
        256 * 1024,
        ge=1,
        le=1024 * 1024,
        description="Largest JSON payload of one event a handler publishes.",
    )
    max_state_bytes: int = Field(
        1024 * 1024, ge=1, le=1024 * 1024, description="Largest JSON state a handler stores."
    )
    max_prepared_bytes: int = Field(
        1024 * 1024, ge=1, description="Largest JSON value a consumer's prepare returns."
    )
    max_mutate_attempts: int = Field(
        3,
        ge=1,
        le=100,
        description="Calls of mutate in one consumer run (again only after a definite "
        "failure found by reconcile or a person).",
    )
    workflow_call_timeout_seconds: float = Field(
        10.0, gt=0, description="Deadline of calls to the event store and the queue by sessions."
    )
    fault_exit_after_phase: str = Field(
        "",
        description="Testing aid: exit the process (as kill -9 would) right after a handler run "
        "durably enters this phase (e.g. PREPARED). Empty: never.",
    )
    fault_exit_handler: str = Field(
        "",
        description="Testing aid: only runs of this handler (e.g. charge_order) trigger "
        "fault_exit_after_phase. Empty: a run of any handler.",
    )
    # -- journal outbox relay ------------------------------------------------------
    relay_batch_size: int = Field(200, ge=1, le=1000, description="Records per journal append.")
    relay_poll_seconds: float = Field(1.0, gt=0, description="Relay re-check period.")
    relay_wake_interval_seconds: float = Field(
        0.05,
        gt=0,
        le=10,
        description="While writes keep coming, the outbox relay is woken at most once per "
        "this many seconds (the first write after a quiet spell wakes it at once): a "
        "consumer run's checkpoints each write records, so its later ones share a pass.",
    )
    relay_backoff_initial_seconds: float = Field(0.2, gt=0)
    relay_backoff_max_seconds: float = Field(30.0, gt=0)
    relay_append_timeout_seconds: float = Field(10.0, gt=0)
    self_check_timeout_seconds: float = Field(
        5.0, gt=0, description="Deadline of each start-up self-check (queue reachable)."
    )

    def runner_settings(self) -> RunnerSettings:
        """The runners' settings: every field of RunnerSettings this class names."""
        names = {f.name for f in fields(RunnerSettings)}
        return RunnerSettings(
            **{n: getattr(self, n) for n in names if n in type(self).model_fields}
        )

    @model_validator(mode="after")
    def _heartbeat_within_lease(self) -> ExecutorSettings:
        if self.heartbeat_interval_seconds >= self.lease_seconds:
            raise ValueError("heartbeat_interval_seconds must be below lease_seconds")
        return self
