"""The scheduler's optional AI advisor (off by default).

For a job that enables it, the advisor asks an OpenAI-compatible
chat-completions endpoint which endpoints to call next and when to run next,
validates the answer (JSON schema, then the job's rules), repairs or salvages
it, and otherwise tells the scheduler to fall back (plan None). `advise` never
raises for provider or answer problems. See docs/scheduler.md.
"""

from conveyor_scheduler.advisor.advisor import Advisor
from conveyor_scheduler.advisor.settings import AdvisorSettings
from conveyor_scheduler.advisor.types import (
    AdvisorOutcome,
    AdvisorPlan,
    AdvisorRequest,
    Classification,
    EndpointInfo,
    OutcomeResult,
    RunSummary,
)

__all__ = [
    "Advisor",
    "AdvisorOutcome",
    "AdvisorPlan",
    "AdvisorRequest",
    "AdvisorSettings",
    "Classification",
    "EndpointInfo",
    "OutcomeResult",
    "RunSummary",
]
