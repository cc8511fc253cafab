"""One endpoint of an HTTP run: its attempts, retries, breaker and call records.

Each attempt is one HTTP_CALL step (scrubbed request/response, timings, sizes).
Transient failures are retried per the endpoint's retry policy (Retry-After
honoured); a refusal by the open breaker ends the endpoint at once with
circuit_open, since retrying against an open breaker within seconds is
pointless: the queue's retry of the whole work order comes later.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
from opentelemetry import propagate, trace

from conveyor.common.v1 import job_pb2
from conveyor_core.clock import Clock
from conveyor_core.context import get_correlation_id
from conveyor_core.telemetry import tracer
from conveyor_executor.domain.failure import ClassifiedError, ErrorType
from conveyor_executor.runners.abort import Aborted, sleep_unless_cancelled, unless_cancelled
from conveyor_executor.runners.breaker import Admission, SharedBreaker, Transition
from conveyor_executor.runners.classify import CallVerdict, classify_exception, classify_status
from conveyor_executor.runners.context import RunContext, Step, StepKind, StepStatus
from conveyor_executor.runners.retry import next_delay, parse_retry_after, retry_params
from conveyor_executor.runners.scrub import Scrubber
from conveyor_executor.runners.settings import RunnerSettings

logger = logging.getLogger(__name__)
_tracer = tracer(__name__)

WORK_FOUND_HEADER = "conveyor-work-found"


class EndpointStatus(enum.StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ABORTED = "aborted"


@dataclass(frozen=True)
class EndpointResult:
    name: str
    status: EndpointStatus
    error: ClassifiedError | None = None
    no_work: bool = False  # answered 204 or `conveyor-work-found: false`
    calls: int = 0


@dataclass(frozen=True)
class PreparedRequest:
    """An endpoint's request with secrets resolved, and what a record may show of it."""

    endpoint: job_pb2.HttpEndpoint
    headers: Mapping[str, str]
    secret_headers: Mapping[str, str]  # header name -> secret name
    body: bytes
    timeout: float


@dataclass
class _Answer:
    status: int
    headers: httpx.Headers
    body: bytes
    body_truncated: bool


@dataclass
class _Attempt:
    verdict: CallVerdict
    started_at: datetime
    attributes: dict[str, Any] = field(default_factory=dict)
    retry_after: float | None = None
    no_work: bool = False


class EndpointCaller:
    """Calls endpoints of one run; shared by the plan's concurrent calls."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        ctx: RunContext,
        settings: RunnerSettings,
        clock: Clock,
        scrubber: Scrubber,
        breakers: Mapping[str, SharedBreaker],
    ) -> None:
        self._client = client
        self._ctx = ctx
        self._settings = settings
        self._clock = clock
        self._scrubber = scrubber
        self._breakers = breakers

    async def call(self, request: PreparedRequest) -> EndpointResult:
        """All attempts of one endpoint until success, a definite failure or exhaustion."""
        endpoint = request.endpoint
        policy = endpoint.retry_policy if endpoint.HasField("retry_policy") else None
        params = retry_params(policy, self._settings)
        number = 0
        while True:
            number += 1
            try:
                attempt = await self._attempt(request, number)
            except Aborted:
                return EndpointResult(endpoint.name, EndpointStatus.ABORTED, calls=number)
            error = attempt.verdict.error
            retry = (
                error is not None
                and error.type is not ErrorType.CIRCUIT_OPEN
                and params.should_retry(error, number)
            )
            delay = next_delay(params, number, attempt.retry_after, self._settings, random.uniform)
            if retry:
                attempt.attributes["retry_in_seconds"] = round(delay, 3)
            await self._record(endpoint.name, attempt)
            if error is None:
                return EndpointResult(
                    endpoint.name, EndpointStatus.SUCCEEDED, no_work=attempt.no_work, calls=number
                )
            if not retry:
                return EndpointResult(endpoint.name, EndpointStatus.FAILED, error, calls=number)
            try:
                await sleep_unless_cancelled(delay, self._ctx.cancelled)
            except Aborted:
                return EndpointResult(endpoint.name, EndpointStatus.ABORTED, error, calls=number)

    async def _attempt(self, request: PreparedRequest, number: int) -> _Attempt:
        endpoint = request.endpoint
        breaker = self._breakers[endpoint.name]
        admission, transition = await breaker.before_call()
        await self._record_transition(endpoint.name, transition)
        started_at = self._clock.now()
        attributes = self._request_attributes(request, number)
        if not admission.allowed:
            return self._refused(endpoint.name, breaker.key, admission, started_at, attributes)
        began = time.monotonic()
        try:
            answer = await unless_cancelled(
                self._traced_send(request, attributes), self._ctx.cancelled
            )
        except Aborted:
            attributes["duration_ms"] = _millis_since(began)
            await self._record_aborted(endpoint.name, started_at, attributes)
            raise
        except Exception as exc:  # every transport failure is classified, never raised
            verdict = self._scrubbed(classify_exception(exc, endpoint.name, request.timeout))
            attributes["duration_ms"] = _millis_since(began)
            await self._settle(endpoint.name, breaker, admission, verdict)
            return _Attempt(verdict, started_at, attributes)
        attributes["duration_ms"] = _millis_since(began)
        verdict = classify_status(answer.status, endpoint.name)
        await self._settle(endpoint.name, breaker, admission, verdict)
        attributes.update(self._response_attributes(answer))
        no_work = answer.status == 204 or (
            answer.headers.get(WORK_FOUND_HEADER, "").strip().lower() == "false"
        )
        retry_after = parse_retry_after(answer.headers.get("retry-after"), self._clock.now())
        return _Attempt(verdict, started_at, attributes, retry_after, no_work)

    async def _traced_send(self, request: PreparedRequest, attributes: dict[str, Any]) -> _Answer:
        """`_send` in a CLIENT span; the span's context travels in the request's headers."""
        span_attributes = {
            "http.request.method": attributes["method"],
            "url.full": attributes["url"],
            "conveyor.endpoint": request.endpoint.name,
            "conveyor.run_id": self._ctx.run_id,
            "conveyor.attempt": attributes["attempt"],
        }
        correlation_id = get_correlation_id()
        if correlation_id:
            span_attributes["conveyor.correlation_id"] = correlation_id
        name = f"http {request.endpoint.name}"
        with _tracer.start_as_current_span(
            name, kind=trace.SpanKind.CLIENT, attributes=span_attributes
        ) as span:
            answer = await self._send(request)
            span.set_attribute("http.response.status_code", answer.status)
            if answer.status >= 400:
                span.set_status(trace.StatusCode.ERROR)
            return answer

    async def _send(self, request: PreparedRequest) -> _Answer:
        endpoint = request.endpoint
        headers = dict(request.headers)
        propagate.inject(headers)  # W3C traceparent: the endpoint joins the run's trace
        correlation_id = get_correlation_id()
        if correlation_id:
            headers.setdefault("x-correlation-id", correlation_id)
        timeout = httpx.Timeout(
            request.timeout,
            connect=min(request.timeout, self._settings.http_connect_timeout_seconds),
        )
        limit = self._settings.max_response_bytes
        # httpx's timeouts bound each network operation; this bounds the whole call.
        async with asyncio.timeout(request.timeout):
            async with self._client.stream(
                endpoint.method.upper() or "GET",
                endpoint.url,
                headers=headers,
                content=request.body or None,
                timeout=timeout,
            ) as response:
                body = bytearray()
                truncated = False
                async for chunk in response.aiter_bytes():
                    body.extend(chunk[: limit - len(body)])
                    if len(body) >= limit:
                        truncated = True  # never hold more than the limit in memory
                        break
                return _Answer(response.status_code, response.headers, bytes(body), truncated)

    def _scrubbed(self, verdict: CallVerdict) -> CallVerdict:
        """The verdict with its message scrubbed (exception texts may quote the URL)."""
        if verdict.error is None:
            return verdict
        error = dataclasses.replace(
            verdict.error, message=self._scrubber.text(verdict.error.message)
        )
        return dataclasses.replace(verdict, error=error)

    async def _settle(
        self, name: str, breaker: SharedBreaker, admission: Admission, verdict: CallVerdict
    ) -> None:
        transition = await breaker.after_call(admission, healthy=not verdict.unhealthy)
        await self._record_transition(name, transition)

    def _refused(
        self,
        name: str,
        key: str,
        admission: Admission,
        started_at: datetime,
        attributes: dict[str, Any],
    ) -> _Attempt:
        message = (
            f"endpoint {name!r} not called: its circuit breaker is open after repeated "
            f"failures; next trial in {admission.retry_in_seconds:.1f}s"
        )
        error = ClassifiedError.of(ErrorType.CIRCUIT_OPEN, message, endpoint=name, breaker=key)
        attributes["refused_by_breaker"] = True
        return _Attempt(CallVerdict(error, unhealthy=False), started_at, attributes)

    def _request_attributes(self, request: PreparedRequest, number: int) -> dict[str, Any]:
        endpoint = request.endpoint
        body, body_truncated = self._scrubber.body(
            request.body, self._settings.max_recorded_body_bytes
        )
        return {
            "method": endpoint.method.upper() or "GET",
            "url": self._scrubber.text(endpoint.url),
            "attempt": number,
            "request_headers": self._scrubber.headers(request.headers, request.secret_headers),
            "request_bytes": len(request.body),
            "request_body": body,
            "request_body_truncated": body_truncated,
        }

    def _response_attributes(self, answer: _Answer) -> dict[str, Any]:
        body, body_truncated = self._scrubber.body(
            answer.body, self._settings.max_recorded_body_bytes
        )
        return {
            "status_code": answer.status,
            "response_headers": self._scrubber.headers(dict(answer.headers.items())),
            "response_bytes": len(answer.body),
            "response_body": body,
            "response_body_truncated": body_truncated or answer.body_truncated,
        }

    async def _record(self, name: str, attempt: _Attempt) -> None:
        error = attempt.verdict.error
        status = StepStatus.SUCCEEDED if error is None else StepStatus.FAILED
        await self._ctx.record_step(
            Step(
                StepKind.HTTP_CALL,
                name,
                status,
                attempt.started_at,
                self._clock.now(),
                attempt.attributes,
                error,
            )
        )

    async def _record_aborted(
        self, name: str, started_at: datetime, attributes: dict[str, Any]
    ) -> None:
        error = ClassifiedError.of(
            ErrorType.ABORTED,
            f"call to endpoint {name!r} abandoned: the run was aborted",
            endpoint=name,
        )
        await self._ctx.record_step(
            Step(
                StepKind.HTTP_CALL,
                name,
                StepStatus.ABORTED,
                started_at,
                self._clock.now(),
                attributes,
                error,
            )
        )

    async def _record_transition(self, name: str, transition: Transition | None) -> None:
        if transition is None:
            return
        now = self._clock.now()
        attributes = {
            "breaker": transition.key,
            "from": str(transition.from_state),
            "to": str(transition.to_state),
        }
        await self._ctx.record_step(
            Step(StepKind.BREAKER_TRANSITION, name, StepStatus.INFO, now, now, attributes)
        )


def _millis_since(began: float) -> int:
    return round((time.monotonic() - began) * 1000)
