"""The advisor: ask, judge, repair, salvage or fall back; record classifications and tokens.

`advise` never raises because of the provider or the answer: every failure is
classified, counted, and ends in `AdvisorOutcome(plan=None)` so the scheduler
uses the job's own policy. Repairs come before salvage: a corrected full plan is
better than a partial one; a job that prefers saving tokens sets
`max_repairs=0` and gets the salvage (if allowed) at once.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import timedelta

from conveyor_core.clock import Clock, SystemClock
from conveyor_core.metrics import meter
from conveyor_scheduler.advisor.answer import evaluate
from conveyor_scheduler.advisor.client import ChatClient, ChatReply, ProviderError
from conveyor_scheduler.advisor.prompt import build_messages, repair_messages
from conveyor_scheduler.advisor.settings import AdvisorSettings
from conveyor_scheduler.advisor.types import (
    AdvisorOutcome,
    AdvisorPlan,
    AdvisorRequest,
    Classification,
    OutcomeResult,
)

logger = logging.getLogger(__name__)

_meter = meter(__name__)
_classifications = _meter.create_counter(
    "conveyor.scheduler.advisor.classifications",
    description="Advisor answers classified as unusable, by job and classification.",
)
_tokens = _meter.create_counter(
    "conveyor.scheduler.advisor.tokens",
    unit="{token}",
    description="Tokens reported by the AI provider, by job and direction (input|output).",
)
_outcomes = _meter.create_counter(
    "conveyor.scheduler.advisor.outcomes",
    description="Advice results by job: accepted, repaired, salvaged or fallback.",
)

FALLBACK_DISABLED = "disabled"
FALLBACK_PROVIDER_ERROR = Classification.PROVIDER_ERROR.value
FALLBACK_REPAIR_FAILED = Classification.REPAIR_FAILED.value
FALLBACK_INTERNAL_ERROR = "internal_error"
FALLBACK_INVALID_REQUEST = "invalid_request"


def _request_problem(request: AdvisorRequest) -> str | None:
    """Why no answer to `request` could pass validation, or None."""
    if not request.endpoints:
        return "the job has no endpoints"
    if request.min_next_run < timedelta(0) or request.min_next_run > request.max_next_run:
        return f"bounds [{request.min_next_run}, {request.max_next_run}] are empty or negative"
    return None


@dataclass
class _Tally:
    """What one `advise` call has spent and met so far."""

    job: str
    classifications: list[str] = field(default_factory=list)
    repair_attempts: int = 0
    input_tokens: int = 0
    output_tokens: int = 0

    def add_usage(self, reply: ChatReply) -> None:
        self.input_tokens += reply.input_tokens
        self.output_tokens += reply.output_tokens
        _tokens.add(reply.input_tokens, {"job": self.job, "direction": "input"})
        _tokens.add(reply.output_tokens, {"job": self.job, "direction": "output"})

    def classify(self, classification: Classification) -> None:
        self.classifications.append(classification.value)
        _classifications.add(1, {"job": self.job, "classification": classification.value})

    def finish(
        self, result: OutcomeResult, plan: AdvisorPlan | None, fallback: str | None = None
    ) -> AdvisorOutcome:
        _outcomes.add(1, {"job": self.job, "result": result.value})
        return AdvisorOutcome(
            plan=plan,
            classifications=tuple(self.classifications),
            repair_attempts=self.repair_attempts,
            salvaged=result is OutcomeResult.SALVAGED,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            fallback_reason=fallback,
            result=result,
        )


class Advisor:
    """Proposes the next run of a job from its history through an AI provider.

    Args:
        settings: provider, limits and the global on/off switch.
        clock: times provider calls for the logs.
    """

    def __init__(self, settings: AdvisorSettings, clock: Clock | None = None) -> None:
        self._settings = settings
        self._clock = clock or SystemClock()
        self._client = ChatClient(settings)
        self._slots = asyncio.Semaphore(settings.max_concurrent_requests)

    @property
    def enabled(self) -> bool:
        return self._settings.enabled

    async def advise(self, request: AdvisorRequest) -> AdvisorOutcome:
        """A plan for `request`'s job, or plan None with the reason to fall back.

        Never raises (except cancellation): a bug in the advisor must not stop
        the scheduler from firing the job by its own policy.
        """
        if not self._settings.enabled:
            return AdvisorOutcome(plan=None, fallback_reason=FALLBACK_DISABLED)
        tally = _Tally(request.job)
        problem = _request_problem(request)
        if problem is not None:
            # No answer could be valid: asking would only spend tokens.
            logger.warning("advisor not asked for job %s: %s", request.job, problem)
            return tally.finish(OutcomeResult.FALLBACK, None, FALLBACK_INVALID_REQUEST)
        try:
            return await self._advise(request, tally)
        except Exception:
            logger.exception("advisor failed unexpectedly for job %s", request.job)
            return tally.finish(OutcomeResult.FALLBACK, None, FALLBACK_INTERNAL_ERROR)

    async def _advise(self, request: AdvisorRequest, tally: _Tally) -> AdvisorOutcome:
        messages = build_messages(request, self._settings.history_token_budget)
        salvage: AdvisorPlan | None = None
        for attempt in range(self._settings.max_repairs + 1):
            try:
                reply = await self._ask(request.job, messages)
            except ProviderError as error:
                logger.warning("advisor provider error for job %s: %s", request.job, error)
                tally.classify(Classification.PROVIDER_ERROR)
                return self._give_up(tally, salvage, FALLBACK_PROVIDER_ERROR)
            tally.add_usage(reply)
            verdict = evaluate(reply.content, request, self._settings.max_reason_length)
            if verdict.plan is not None:
                result = OutcomeResult.REPAIRED if attempt else OutcomeResult.ACCEPTED
                logger.info("advisor %s a plan for job %s", result.value, request.job)
                return tally.finish(result, verdict.plan)
            assert verdict.classification is not None
            tally.classify(verdict.classification)
            logger.info(
                "advisor answer for job %s rejected (%s): %s",
                request.job,
                verdict.classification.value,
                "; ".join(verdict.issues),
            )
            if request.allow_partial and verdict.salvage is not None:
                salvage = verdict.salvage
            if attempt < self._settings.max_repairs:
                tally.repair_attempts += 1
                messages += repair_messages(
                    reply.content,
                    verdict.classification,
                    verdict.issues,
                    self._settings.repair_echo_chars,
                )
        tally.classify(Classification.REPAIR_FAILED)
        return self._give_up(tally, salvage, FALLBACK_REPAIR_FAILED)

    async def _ask(self, job: str, messages: list[dict[str, str]]) -> ChatReply:
        async with self._slots:
            started = self._clock.now()
            reply = await self._client.complete(messages)
            elapsed = (self._clock.now() - started).total_seconds()
            logger.debug("advisor answered for job %s in %.3fs", job, elapsed)
            return reply

    @staticmethod
    def _give_up(tally: _Tally, salvage: AdvisorPlan | None, reason: str) -> AdvisorOutcome:
        if salvage is not None:
            logger.info("advisor salvaged a partial plan for job %s", tally.job)
            return tally.finish(OutcomeResult.SALVAGED, salvage)
        logger.info("advisor falls back for job %s: %s", tally.job, reason)
        return tally.finish(OutcomeResult.FALLBACK, None, reason)

    async def close(self) -> None:
        """Release the HTTP connections; idempotent, safe before any advise."""
        await self._client.close()
