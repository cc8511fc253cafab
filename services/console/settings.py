"""Settings of the web console (CONVEYOR_CONSOLE_*). Every limit is named here."""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from conveyor_core.settings import _check_host_port


class ConsoleSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONVEYOR_CONSOLE_", frozen=True, extra="ignore")

    listen_address: str = Field(
        "127.0.0.1:8080",
        description="host:port the console's HTTP server binds (port 0: any free port).",
    )
    call_timeout_seconds: float = Field(
        10.0, gt=0, le=300, description="Deadline of each gRPC call the console makes."
    )
    refresh_seconds: float = Field(
        2.0, gt=0, le=3600, description="How often pages refresh their figures and charts."
    )
    default_namespace: str = Field("default", description="Namespace shown before one is chosen.")
    trace_url: str = Field(
        "",
        description="Link of a trace id, {trace_id} replaced (e.g. Jaeger's "
        "http://localhost:16686/trace/{trace_id}); empty: trace ids are shown as text.",
    )
    cookie_secure: bool = Field(
        False, description="Mark the sign-in cookie Secure (set it when served over HTTPS)."
    )

    @field_validator("listen_address")
    @classmethod
    def _host_port(cls, value: str) -> str:
        return _check_host_port(value)
