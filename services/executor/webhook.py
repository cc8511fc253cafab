"""The completion notification webhook: a POST with a JSON summary when a run ends.

Its failure mode (conveyor.common.v1.IntegrationFailureMode) decides what a
failed call does: DISABLED never calls; FAIL_FAST fails the run; BEST_EFFORT
(also the default) records the failed call and lets the outcome stand.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import httpx
from opentelemetry import propagate

from conveyor.common.v1 import job_pb2
from conveyor_core.clock import Clock
from conveyor_executor.domain.failure import ClassifiedError, ErrorType
from conveyor_executor.runners.context import RunContext, Step, StepKind, StepStatus

log = logging.getLogger(__name__)

FailureMode = job_pb2.IntegrationFailureMode
WEBHOOK_STEP = "completion webhook"


def mode_of(webhook: job_pb2.NotificationWebhook) -> int:
    if not webhook.url or webhook.failure_mode == job_pb2.INTEGRATION_FAILURE_MODE_DISABLED:
        return job_pb2.INTEGRATION_FAILURE_MODE_DISABLED
    if webhook.failure_mode == job_pb2.INTEGRATION_FAILURE_MODE_FAIL_FAST:
        return job_pb2.INTEGRATION_FAILURE_MODE_FAIL_FAST
    return job_pb2.INTEGRATION_FAILURE_MODE_BEST_EFFORT


def classify_status(status: int) -> ClassifiedError:
    message = f"completion webhook answered HTTP {status}"
    if status == 401:
        return ClassifiedError.of(ErrorType.AUTH, message + ": check its credentials")
    if status == 403:
        return ClassifiedError.of(ErrorType.PERMISSION, message + ": the caller is not allowed")
    if status == 429:
        return ClassifiedError.of(ErrorType.RATE_LIMITED, message + ": slow down")
    return ClassifiedError(ErrorType.HANDLER_LOGIC, message, status >= 500, {})


class WebhookNotifier:
    def __init__(self, timeout: float, clock: Clock) -> None:
        self._timeout = timeout
        self._clock = clock

    async def notify(
        self, webhook: job_pb2.NotificationWebhook, summary: Mapping[str, Any], ctx: RunContext
    ) -> ClassifiedError | None:
        """POST `summary`; record the call as a step; return its failure, if any."""
        headers = {"content-type": "application/json"}
        missing = []
        for name, value in webhook.headers.items():
            if value.WhichOneof("source") == "secret":
                secret = ctx.secret(value.secret.name)
                if secret is None:
                    missing.append(value.secret.name)
                    continue
                headers[name] = secret
            else:
                headers[name] = value.value
        propagate.inject(headers)  # the call joins the run's trace
        started = self._clock.now()
        error, status = await self._post(webhook.url, summary, headers, missing)
        await ctx.record_step(
            Step(
                kind=StepKind.INTEGRATION_CALL,
                name=WEBHOOK_STEP,
                status=StepStatus.FAILED if error else StepStatus.SUCCEEDED,
                started_at=started,
                finished_at=self._clock.now(),
                attributes={"url": _scrubbed_url(webhook.url), "status_code": status},
                error=error,
            )
        )
        return error

    async def _post(
        self, url: str, summary: Mapping[str, Any], headers: dict[str, str], missing: list[str]
    ) -> tuple[ClassifiedError | None, int]:
        if missing:
            message = f"completion webhook secrets not found: {', '.join(sorted(missing))}"
            return ClassifiedError.of(ErrorType.INVALID_INPUT, message), 0
        try:
            async with httpx.AsyncClient(timeout=self._timeout) as client:
                response = await client.post(url, json=dict(summary), headers=headers)
        except httpx.TimeoutException:
            message = f"completion webhook timed out after {self._timeout}s"
            return ClassifiedError.of(ErrorType.TIMEOUT, message), 0
        except httpx.HTTPError as exc:
            message = f"completion webhook unreachable: {type(exc).__name__}"
            return ClassifiedError.of(ErrorType.NETWORK, message), 0
        if response.status_code >= 400:
            return classify_status(response.status_code), response.status_code
        return None, response.status_code


def _scrubbed_url(url: str) -> str:
    """The URL without query string or user info, which may hold tokens."""
    parsed = httpx.URL(url)
    return str(parsed.copy_with(query=None, fragment=None, userinfo=b""))
