"""Typed, frozen settings read once from CONVEYOR_* environment variables.

Nothing deep in the code reads `os.environ`: `load(SettingsClass)` builds a
frozen object at start and raises `ConfigurationError` naming every bad
variable. Each service adds its own class with its own prefix
(CONVEYOR_QUEUE_*, ...).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

S = TypeVar("S", bound=BaseSettings)


class ConfigurationError(Exception):
    """The environment holds invalid settings; the message lists each one."""


def load(cls: type[S], **overrides: object) -> S:
    """Build settings from the environment (and explicit overrides, for tests)."""
    try:
        return cls(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        prefix = cls.model_config.get("env_prefix", "")
        lines = []
        for error in exc.errors():
            name = "_".join(str(part) for part in error["loc"]).upper()
            if not name:  # a rule across fields: its message names them; the input is
                # every setting, secrets included, so it is not echoed
                lines.append(f"  {error['msg'].removeprefix('Value error, ')}")
            elif any(word in name for word in ("SECRET", "TOKEN", "PASSWORD", "HEADERS")):
                lines.append(f"  {prefix}{name}: {error['msg']}")
            else:
                lines.append(f"  {prefix}{name}: {error['msg']} (got {error.get('input')!r})")
        raise ConfigurationError("invalid configuration:\n" + "\n".join(lines)) from None


class CoreSettings(BaseSettings):
    """Settings shared by every service process."""

    model_config = SettingsConfigDict(env_prefix="CONVEYOR_", frozen=True, extra="ignore")

    database_url: str = Field(
        "",
        description="SQLAlchemy URL of PostgreSQL (postgresql+asyncpg://...). "
        "Empty: embedded SQLite files under data_dir.",
    )
    redis_url: str = Field("", description="redis://... Empty: in-process coordination.")
    redis_key_prefix: str = Field("conveyor:", description="Prefix of every Redis key.")
    data_dir: Path = Field(Path("data"), description="Where the embedded default keeps files.")
    listen_address: str = Field("127.0.0.1:50051", description="host:port the gRPC server binds.")
    health_listen_address: str = Field(
        "",
        description="host:port serving only the gRPC health service, in plaintext, for probes "
        "when the main port requires TLS. Empty: health on the main port only.",
    )
    readiness_check_interval_seconds: float = Field(
        5.0, gt=0, le=600, description="How often readiness re-checks database, Redis and peers."
    )
    readiness_check_timeout_seconds: float = Field(
        2.0, gt=0, le=60, description="Deadline of one service's dependency check."
    )
    readiness_failure_threshold: int = Field(
        3, ge=1, le=100, description="Failed checks in a row before a service turns NOT_SERVING."
    )
    readiness_success_threshold: int = Field(
        2, ge=1, le=100, description="Good checks in a row before it turns SERVING again."
    )
    liveness_stall_seconds: float = Field(
        30.0,
        ge=0,
        le=3600,
        description="An event loop without a watchdog beat this long fails liveness for good; "
        "0: no watchdog.",
    )
    grpc_max_message_bytes: int = Field(8 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024)
    shutdown_grace_seconds: float = Field(10.0, ge=0, le=600)
    db_pool_size: int = Field(20, ge=1, le=200)
    db_statement_timeout_seconds: float = Field(30.0, gt=0)
    migrate_on_start: bool = Field(True, description="Apply schema migrations at start.")
    page_token_secret: str = Field(
        "conveyor-dev-page-token-secret",
        min_length=16,
        description="HMAC key signing page tokens; set the same value on every replica.",
    )
    journal_address: str = Field(
        "",
        description="host:port of the event store's JournalService that outbox relays deliver "
        "to. Empty: the journal hosted in the same process, if any; else no relay.",
    )
    queue_address: str = Field(
        "",
        description="host:port of the work-order queue that the scheduler and executor call. "
        "Empty: the queue hosted in the same process.",
    )
    events_address: str = Field(
        "",
        description="host:port of the event store (topics, pending counts) for the scheduler "
        "and executor. Empty: the event store hosted in the same process.",
    )
    scheduler_address: str = Field(
        "",
        description="host:port of the scheduler, where executors hosting workflows register "
        "their producer schedules and consumer triggers. Empty: the scheduler hosted in the "
        "same process.",
    )
    executor_address: str = Field(
        "",
        description="host:port of an executor, which the scheduler asks whether a deployed "
        "app defines a job's workflow target. Empty: the executor hosted in the same "
        "process, if any; else such targets are accepted with a warning.",
    )
    outbox_purge_after_seconds: float = Field(
        3600.0,
        ge=0,
        description="Journal outbox rows (the executor's and the scheduler's) are deleted this "
        "long after their delivery to the journal, which holds them from then on. 0: kept.",
    )
    outbox_purge_interval_seconds: float = Field(
        60.0, gt=0, description="How often each journal relay deletes the rows past that age."
    )
    outbox_purge_batch: int = Field(
        5000, ge=1, description="Rows one purge statement deletes (it repeats until done)."
    )
    otlp_endpoint: str = Field("", description="OTLP/gRPC collector (Jaeger); empty: no export.")
    otlp_timeout_seconds: float = Field(
        5.0, gt=0, le=60, description="Deadline of one span export call (its retries included)."
    )
    otlp_shutdown_timeout_seconds: float = Field(
        2.0,
        ge=0,
        le=60,
        description="Deadline of each span export while the process stops (the final flush).",
    )
    otlp_retry_max_seconds: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="Longest pause between export attempts while the collector is unreachable.",
    )
    otlp_headers: SecretStr = Field(
        SecretStr(""),
        description="Headers sent with every export, key=value,key2=value2 (e.g. an API key).",
    )
    otlp_ca_file: str = Field(
        "",
        description="PEM CA bundle to verify the collector (TLS); empty: per the endpoint scheme.",
    )
    trace_sample_ratio: float = Field(
        1.0,
        ge=0,
        le=1,
        description="Share of new traces recorded (parent-based: a caller's decision is kept).",
    )
    metrics_port: int = Field(
        0, ge=0, le=65535, description="Port serving Prometheus /metrics; 0: not served."
    )
    metrics_host: str = Field("0.0.0.0", description="Interface the /metrics endpoint binds.")
    auth_tokens_file: str = Field(
        "",
        description="JSON file of principals (token digests or certificate subjects, their "
        "namespaces and roles; docs/security.md). Empty: no authentication.",
    )
    auth_reload_seconds: float = Field(
        10.0, gt=0, le=3600, description="How often a changed principals file is re-read."
    )
    peer_token: SecretStr = Field(
        SecretStr(""),
        description="Bearer token this process presents to the other services (queue, event "
        "store, journal). Empty: services hosted in the same process use an internal identity.",
    )
    tls_cert_file: str = Field("", description="PEM certificate chain the server presents.")
    tls_key_file: str = Field("", description="PEM private key of tls_cert_file.")
    tls_client_ca_file: str = Field(
        "",
        description="PEM CA bundle that client certificates must chain to: set it to require "
        "mutual TLS.",
    )
    tls_ca_file: str = Field(
        "", description="PEM CA bundle to verify the servers this process calls; set: TLS to peers."
    )
    tls_server_name: str = Field(
        "",
        description="Host name to verify the peers' certificates against instead of the address.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    log_scrub_patterns: tuple[str, ...] = Field(
        (),
        description="Regexes (JSON list) masked in every log record, on top of bearer tokens, "
        "URL passwords and resolved secret values; a group masks only the group.",
    )

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if value and not value.startswith(("postgresql", "sqlite")):
            raise ValueError("must be a postgresql+asyncpg:// or sqlite+aiosqlite:// URL")
        return value

    @field_validator("otlp_headers")
    @classmethod
    def _header_pairs(cls, value: SecretStr) -> SecretStr:
        from conveyor_core.otlp import parse_headers

        parse_headers(value.get_secret_value())
        return value

    @field_validator("log_scrub_patterns")
    @classmethod
    def _patterns_compile(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        import re

        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a regular expression: {exc}") from None
        return value

    @field_validator("redis_url")
    @classmethod
    def _known_redis(cls, value: str) -> str:
        if value and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("listen_address")
    @classmethod
    def _host_port(cls, value: str) -> str:
        return _check_host_port(value)

    @field_validator(
        "journal_address",
        "queue_address",
        "events_address",
        "scheduler_address",
        "executor_address",
        "health_listen_address",
    )
    @classmethod
    def _optional_host_port(cls, value: str) -> str:
        return _check_host_port(value) if value else value

    @model_validator(mode="after")
    def _tls_pairs(self) -> CoreSettings:
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError(
                "CONVEYOR_TLS_CERT_FILE and CONVEYOR_TLS_KEY_FILE: set both or neither"
            )
        if self.tls_client_ca_file and not self.tls_cert_file:
            raise ValueError(
                "CONVEYOR_TLS_CLIENT_CA_FILE (mutual TLS) needs CONVEYOR_TLS_CERT_FILE and "
                "CONVEYOR_TLS_KEY_FILE"
            )
        return self

    @property
    def auth_enabled(self) -> bool:
        return bool(self.auth_tokens_file)

    def database_url_for(self, service: str) -> str:
        """The URL a service uses: the shared server, or its own SQLite file."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir / f'{service}.db'}"


def _check_host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("must be host:port, e.g. 0.0.0.0:50051")
    return value
