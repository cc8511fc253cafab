"""Settings of the scheduler's AI advisor (CONVEYOR_ADVISOR_*). Every limit is named here."""

from __future__ import annotations

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class AdvisorSettings(BaseSettings):
    """The advisor is off unless `enabled`; then `base_url` and `model` are required.

    `api_key` is a SecretStr: its repr is masked and the advisor never logs it.
    """

    model_config = SettingsConfigDict(env_prefix="CONVEYOR_ADVISOR_", frozen=True, extra="ignore")

    enabled: bool = Field(False, description="Ask the AI advisor for jobs that enable it.")
    base_url: str = Field(
        "", description="OpenAI-compatible API root; requests go to {base_url}/chat/completions."
    )
    model: str = Field("", description="Model name sent with each request.")
    api_key: SecretStr = Field(
        SecretStr(""), description="Bearer token for the provider (never logged)."
    )
    timeout_seconds: float = Field(20.0, gt=0, description="Deadline of one provider request.")
    max_repairs: int = Field(
        2, ge=0, le=10, description="Follow-up requests after a rejected answer."
    )
    history_token_budget: int = Field(
        2000,
        ge=0,
        description="Estimated tokens (~4 characters each) of run history in a prompt; "
        "oldest runs are dropped first.",
    )
    max_response_bytes: int = Field(
        256 * 1024, ge=1024, description="Largest provider response body read."
    )
    max_output_tokens: int = Field(
        800, ge=16, description="max_tokens asked of the model per answer."
    )
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="Sampling temperature sent.")
    max_reason_length: int = Field(
        500, ge=0, description="A plan's reason is cut to this many characters."
    )
    json_mode: bool = Field(
        True,
        description='Send response_format {"type": "json_object"} (off for providers without it).',
    )
    repair_echo_chars: int = Field(
        4000, ge=0, description="Characters of a rejected answer quoted back in a repair request."
    )
    max_concurrent_requests: int = Field(
        4, ge=1, description="Provider requests in flight at once per scheduler replica."
    )

    @model_validator(mode="after")
    def _configured_when_enabled(self) -> AdvisorSettings:
        if self.enabled and not (self.base_url and self.model):
            raise ValueError(
                "CONVEYOR_ADVISOR_BASE_URL and CONVEYOR_ADVISOR_MODEL are required "
                "when CONVEYOR_ADVISOR_ENABLED is true"
            )
        return self
