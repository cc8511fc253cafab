"""Value types of the AI advisor: what the scheduler asks and what it gets back.

All are frozen dataclasses of plain Python values so the scheduler can store,
log and convert them without knowing anything about the provider.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum


class Classification(StrEnum):
    """Why one answer (or the whole advice) could not be used as given."""

    SCHEMA_PARSE_ERROR = "schema_parse_error"
    """Not JSON, not an object, or not shaped like the answer schema."""
    INVALID_ENUM_VALUE = "invalid_enum_value"
    """Shaped right, but a field restricted to a set of values holds another."""
    EMPTY_RESPONSE = "empty_response"
    """No choices, or a choice with no content."""
    SEMANTIC_VIOLATION = "semantic_violation"
    """Valid JSON that breaks a rule of the job: unknown endpoint, bounds, cycle."""
    STRUCTURAL_INCONSISTENCY = "structural_inconsistency"
    """The plan contradicts itself: duplicate endpoints, dependency outside the plan."""
    REPAIR_FAILED = "repair_failed"
    """No usable answer within the allowed follow-up requests."""
    PROVIDER_ERROR = "provider_error"
    """The provider could not be reached or answered with an HTTP error / timeout."""


class OutcomeResult(StrEnum):
    """How the advice ended (the `result` attribute of the outcomes metric)."""

    ACCEPTED = "accepted"
    REPAIRED = "repaired"
    SALVAGED = "salvaged"
    FALLBACK = "fallback"


@dataclass(frozen=True, slots=True)
class EndpointInfo:
    """An endpoint of the job the advisor may choose, with the job's own dependencies."""

    name: str
    depends_on: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RunSummary:
    """One past run of the job, as the model sees it (newest last in a request)."""

    slot_time: datetime
    outcome: str
    work_found: bool | None = None
    duration_seconds: float | None = None
    error_type: str | None = None
    endpoints_called: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AdvisorRequest:
    """Everything the advisor needs to propose the next run of one job.

    Attributes:
        job: the job's name (used in the prompt and as the metrics attribute).
        endpoints: the endpoints the job may call; the plan may use only these.
        history: past runs, oldest first; the oldest are dropped to fit the budget.
        min_next_run: the earliest acceptable delay until the next run.
        max_next_run: the latest acceptable delay until the next run.
        allow_partial: whether a plan with invalid parts dropped may be used.
        now: the instant the advice is for.
    """

    job: str
    endpoints: tuple[EndpointInfo, ...]
    history: tuple[RunSummary, ...]
    min_next_run: timedelta
    max_next_run: timedelta
    allow_partial: bool
    now: datetime


@dataclass(frozen=True, slots=True)
class AdvisorPlan:
    """A validated proposal: call `endpoints` (dependencies first) next, `next_run_in` from now.

    `confidence` is the model's own (low, medium, high); `reason` is cut to
    `AdvisorSettings.max_reason_length`.
    """

    endpoints: tuple[str, ...]
    next_run_in: timedelta
    reason: str
    confidence: str = "medium"


@dataclass(frozen=True, slots=True)
class AdvisorOutcome:
    """The result of one `Advisor.advise` call.

    Attributes:
        plan: the plan to follow, or None: use the job's fixed/adaptive policy.
        classifications: every classification met, in order (one per unusable
            answer, then `repair_failed` if no answer was usable).
        repair_attempts: follow-up requests sent after a rejected answer.
        salvaged: the plan is what was left of an answer after dropping invalid parts.
        input_tokens: prompt tokens reported by the provider, summed over requests.
        output_tokens: completion tokens reported by the provider, summed over requests.
        fallback_reason: why `plan` is None (`disabled`, `provider_error`,
            `repair_failed`, `invalid_request` when no answer could be valid
            (no endpoints, min > max), or `internal_error` for a bug in the advisor);
            None when there is a plan.
        result: accepted, repaired, salvaged or fallback (the outcomes metric).
    """

    plan: AdvisorPlan | None
    classifications: tuple[str, ...] = ()
    repair_attempts: int = 0
    salvaged: bool = False
    input_tokens: int = 0
    output_tokens: int = 0
    fallback_reason: str | None = None
    result: OutcomeResult = field(default=OutcomeResult.FALLBACK)
