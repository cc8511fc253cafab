"""The HTTP runner: executes one attempt of an HTTP-endpoint job.

`run_http` builds the plan (plan.py), resolves secret headers up front (an
unknown secret fails the run before any call, naming the secret), then runs
the plan: SEQUENTIAL stops at the first failure and records the rest as
skipped; PARALLEL runs every endpoint, at most `max_parallel` at a time; DAG
starts an endpoint once its dependencies succeeded and skips it (recorded
with the reason) once one cannot. Abort (ctx.cancelled) abandons in-flight
calls at once, records them ABORTED, and the outcome is an ABORTED failure.

The outcome's error is the first endpoint failure in completion order: a
definite failure, or the last error of an endpoint whose retries ran out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpx

from conveyor.common.v1 import job_pb2
from conveyor_core.clock import Clock
from conveyor_core.coordination import Coordination
from conveyor_executor.domain.failure import ClassifiedError, ErrorType
from conveyor_executor.runners.breaker import (
    BreakerPolicy,
    SharedBreaker,
    StateReads,
    breaker_key,
)
from conveyor_executor.runners.context import RunContext, RunnerOutcome, Step, StepKind, StepStatus
from conveyor_executor.runners.http_call import (
    EndpointCaller,
    EndpointResult,
    EndpointStatus,
    PreparedRequest,
)
from conveyor_executor.runners.http_transport import KeepAliveTransport
from conveyor_executor.runners.plan import Plan, PlanInvalid, blocked_by, build_plan, check_graph
from conveyor_executor.runners.scrub import Scrubber
from conveyor_executor.runners.settings import RunnerSettings

logger = logging.getLogger(__name__)


class _SecretMissing(Exception):
    def __init__(self, error: ClassifiedError) -> None:
        super().__init__(error.message)
        self.error = error


@dataclass
class _Progress:
    total: int
    results: dict[str, EndpointResult] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    first_error: ClassifiedError | None = None

    def add(self, result: EndpointResult) -> None:
        self.results[result.name] = result
        if result.error is not None and self.first_error is None:
            self.first_error = result.error


class SharedHttpClient:
    """The HTTP clients of every run of an executor process: `pools` of them, in turn.

    A client per run would build a TLS context and open a connection per run
    (the end-to-end profile: ~25 ms of CPU per order, most of the executor's
    time). Shared, connections are kept alive across runs. Several pools
    rather than one because httpcore's pool scans every connection it holds,
    and polls each idle one's socket, whenever a request is queued or a
    response closed: with 64 calls in flight on one pool that scan was 10-14 %
    of the executor's CPU; with 16 pools each scans a sixteenth. The pools share
    one TLS context (the CA bundle is loaded once). Cookies are never
    stored, so no job's calls carry what another job's endpoint set. `get()`
    reopens a client after `close()` (a restarted service).
    """

    def __init__(self, pools: int = 1, transport: str = "keepalive") -> None:
        if pools < 1:
            raise ValueError(f"pools is {pools}; it must be at least 1 (http_client_pools)")
        if transport not in ("httpcore", "keepalive"):
            raise ValueError(f"transport is {transport!r}; httpcore or keepalive (http_transport)")
        self._transport = transport
        self._clients: list[httpx.AsyncClient | None] = [None] * pools
        self._next = 0
        self._tls: ssl.SSLContext | None = None  # one CA bundle loaded, for every pool

    def get(self) -> httpx.AsyncClient:
        """The next client in turn (opened if it is not)."""
        index = self._next
        self._next = (index + 1) % len(self._clients)
        client = self._clients[index]
        if client is None or client.is_closed:
            if self._tls is None:
                self._tls = httpx.create_ssl_context(trust_env=False)
            lean = KeepAliveTransport(self._tls) if self._transport == "keepalive" else None
            client = self._clients[index] = new_http_client(self._tls, lean)
        return client

    async def close(self) -> None:
        clients, self._clients = self._clients, [None] * len(self._clients)
        for client in clients:
            if client is not None:
                await client.aclose()


def new_http_client(
    tls: ssl.SSLContext | None = None, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """A client for job calls: no redirects followed, no proxy from the environment, no
    cookie kept (timeouts are per request). `tls`: a verifying context to share (without
    one the client loads the CA bundle into a context of its own)."""
    no_cookies = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
    verify: ssl.SSLContext | bool = True if tls is None else tls
    return httpx.AsyncClient(
        follow_redirects=False,
        trust_env=False,
        cookies=no_cookies,
        verify=verify,
        transport=transport,
    )


async def run_http(
    target: job_pb2.HttpTarget,
    endpoints: Sequence[str],
    ctx: RunContext,
    settings: RunnerSettings,
    coordination: Coordination,
    clock: Clock,
    *,
    client: httpx.AsyncClient | None = None,
    breaker_reads: StateReads | None = None,
) -> RunnerOutcome:
    """Run one attempt of an HTTP job over `endpoints` of `target` (empty = all).

    Never raises for a failure of the job: every failure is a classified
    error in the returned outcome. `client` is the process's shared client
    (SharedHttpClient); without one, the attempt opens and closes its own.
    `breaker_reads` is the process's StateReads over `coordination` (the breakers'
    reads of concurrent runs batched); without it, each breaker reads on its own.
    """
    try:
        plan = build_plan(target, endpoints)
        requests = [_prepare(endpoint, ctx, settings) for endpoint in plan.endpoints]
    except (PlanInvalid, _SecretMissing) as exc:
        return RunnerOutcome(False, True, f"plan not run: {exc}", error=exc.error)
    scrubber = _scrubber(requests, settings)
    progress = _Progress(total=len(plan.endpoints))
    for name in plan.left_out:
        await _record_skip(ctx, clock, name, "not selected for this run", StepStatus.SKIPPED)
    async with contextlib.AsyncExitStack() as stack:
        if client is None:
            client = await stack.enter_async_context(new_http_client())
        breakers = {
            r.endpoint.name: _breaker(
                r.endpoint, target, ctx, settings, coordination, clock, breaker_reads
            )
            for r in requests
        }
        caller = EndpointCaller(client, ctx, settings, clock, scrubber, breakers)
        executor = _PlanExecutor(plan, requests, caller, ctx, clock, progress)
        await executor.execute(target, settings)
    return _outcome(progress, ctx)


def _scrubber(requests: Sequence[PreparedRequest], settings: RunnerSettings) -> Scrubber:
    """A scrubber masking the run's secrets, patterns and credential header values.

    Values of credential headers (Authorization, ...) count as secrets even when
    literal, so they are masked wherever they reappear (an echoing endpoint).
    """
    credential_headers = {name.lower() for name in settings.scrub_headers}
    secrets = [
        value
        for r in requests
        for name, value in r.headers.items()
        if name in r.secret_headers or name.lower() in credential_headers
    ]
    return Scrubber(settings.scrub_patterns, settings.scrub_headers, secrets)


def _prepare(
    endpoint: job_pb2.HttpEndpoint, ctx: RunContext, settings: RunnerSettings
) -> PreparedRequest:
    headers: dict[str, str] = {}
    secret_headers: dict[str, str] = {}
    for name, value in endpoint.headers.items():
        if value.WhichOneof("source") == "secret":
            secret = ctx.secret(value.secret.name)
            if secret is None:
                message = (
                    f"secret {value.secret.name!r} (header {name!r} of endpoint "
                    f"{endpoint.name!r}) is not known to the executor; define it in the "
                    "executor's secret source"
                )
                raise _SecretMissing(
                    ClassifiedError.of(
                        ErrorType.INVALID_INPUT,
                        message,
                        endpoint=endpoint.name,
                        secret=value.secret.name,
                    )
                )
            headers[name] = secret
            secret_headers[name] = value.secret.name
        else:
            headers[name] = value.value
    body = endpoint.body.data if endpoint.HasField("body") else b""
    if body and endpoint.body.content_type and "content-type" not in {h.lower() for h in headers}:
        headers["Content-Type"] = endpoint.body.content_type
    timeout = settings.http_call_timeout_seconds
    if endpoint.HasField("timeout") and endpoint.timeout.ToTimedelta().total_seconds() > 0:
        timeout = endpoint.timeout.ToTimedelta().total_seconds()
    timeout = min(timeout, settings.http_max_call_timeout_seconds)
    return PreparedRequest(endpoint, headers, secret_headers, body, timeout)


def _breaker(
    endpoint: job_pb2.HttpEndpoint,
    target: job_pb2.HttpTarget,
    ctx: RunContext,
    settings: RunnerSettings,
    coordination: Coordination,
    clock: Clock,
    reads: StateReads | None,
) -> SharedBreaker:
    configured = target.circuit_breaker
    threshold = configured.failure_threshold or settings.breaker_failure_threshold
    cool_down = settings.breaker_cool_down_seconds
    if configured.HasField("cool_down") and configured.cool_down.ToTimedelta().total_seconds() > 0:
        cool_down = configured.cool_down.ToTimedelta().total_seconds()
    policy = BreakerPolicy(
        failure_threshold=max(1, threshold),
        cool_down_micros=round(cool_down * 1e6),
        trial_timeout_micros=round(settings.breaker_trial_timeout_seconds * 1e6),
    )
    key = breaker_key(ctx.namespace, endpoint.method or "GET", endpoint.url)
    return SharedBreaker(coordination, clock, key, policy, settings.breaker_key_prefix, reads)


class _PlanExecutor:
    """Runs the plan's endpoints in the order its mode asks, recording skips."""

    def __init__(
        self,
        plan: Plan,
        requests: Sequence[PreparedRequest],
        caller: EndpointCaller,
        ctx: RunContext,
        clock: Clock,
        progress: _Progress,
    ) -> None:
        self._plan = plan
        self._requests = {r.endpoint.name: r for r in requests}
        self._caller = caller
        self._ctx = ctx
        self._clock = clock
        self._progress = progress

    async def execute(self, target: job_pb2.HttpTarget, settings: RunnerSettings) -> None:
        """Run the plan in the target's mode (SEQUENTIAL when unspecified)."""
        limit = min(target.max_parallel or settings.max_parallel, settings.max_parallel)
        if target.mode == job_pb2.PLAN_MODE_PARALLEL:
            await self.parallel(limit)
        elif target.mode == job_pb2.PLAN_MODE_DAG:
            await self.dag(limit)
        else:
            await self.sequential()

    async def sequential(self) -> None:
        for name in self._plan.names:
            if self._ctx.cancelled.is_set():
                await self._skip(name, "the run was aborted", StepStatus.ABORTED)
            elif self._progress.first_error is not None:
                await self._skip(name, "an earlier endpoint failed", StepStatus.SKIPPED)
            else:
                await self._run(name)

    async def parallel(self, limit: int) -> None:
        gate = asyncio.Semaphore(limit)

        async def bounded(name: str) -> None:
            async with gate:
                if self._ctx.cancelled.is_set():
                    await self._skip(name, "the run was aborted", StepStatus.ABORTED)
                else:
                    await self._run(name)

        await asyncio.gather(*(bounded(name) for name in self._plan.names))

    async def dag(self, limit: int) -> None:
        graph = {e.name: list(e.depends_on) for e in self._plan.endpoints}
        # Dependencies outside the selection are not graph nodes here: blocked_by skips on them.
        order = check_graph({n: [d for d in deps if d in graph] for n, deps in graph.items()})
        pending = [self._requests[name].endpoint for name in order]
        succeeded, finished = set[str](), set[str]()
        running: dict[asyncio.Task[None], str] = {}
        try:
            while pending or running:
                await self._start_or_skip(pending, running, limit, succeeded, finished, set(graph))
                if not running:
                    continue
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    name = running.pop(task)
                    task.result()
                    finished.add(name)
                    if self._progress.results[name].status is EndpointStatus.SUCCEEDED:
                        succeeded.add(name)
        finally:
            for task in running:  # only on an unexpected error: never leave calls behind
                task.cancel()

    async def _start_or_skip(
        self,
        pending: list[job_pb2.HttpEndpoint],
        running: dict[asyncio.Task[None], str],
        limit: int,
        succeeded: set[str],
        finished: set[str],
        selected: set[str],
    ) -> None:
        """One pass over `pending` (in topological order): skip what cannot run, start what can."""
        for endpoint in list(pending):
            reason = blocked_by(endpoint, succeeded, finished, selected)
            status = StepStatus.SKIPPED
            if self._ctx.cancelled.is_set():
                reason, status = "the run was aborted", StepStatus.ABORTED
            if reason is not None:
                pending.remove(endpoint)
                finished.add(endpoint.name)
                await self._skip(endpoint.name, reason, status)
            elif len(running) < limit and all(d in succeeded for d in endpoint.depends_on):
                pending.remove(endpoint)
                running[asyncio.create_task(self._run(endpoint.name))] = endpoint.name

    async def _run(self, name: str) -> None:
        result = await self._caller.call(self._requests[name])
        self._progress.add(result)
        done = len(self._progress.results) + len(self._progress.skipped)
        await self._ctx.report_progress(
            100.0 * done / max(1, self._progress.total),
            f"{done}/{self._progress.total} endpoints done; {name} {result.status}",
        )

    async def _skip(self, name: str, reason: str, status: StepStatus) -> None:
        self._progress.skipped.append(name)
        await _record_skip(self._ctx, self._clock, name, reason, status)


async def _record_skip(
    ctx: RunContext, clock: Clock, name: str, reason: str, status: StepStatus
) -> None:
    now = clock.now()
    await ctx.record_step(
        Step(StepKind.ENDPOINT_SKIPPED, name, status, now, now, {"reason": reason})
    )


def _outcome(progress: _Progress, ctx: RunContext) -> RunnerOutcome:
    results = progress.results.values()
    succeeded = [r for r in results if r.status is EndpointStatus.SUCCEEDED]
    failed = [r for r in results if r.status is EndpointStatus.FAILED]
    aborted = ctx.cancelled.is_set() or any(r.status is EndpointStatus.ABORTED for r in results)
    summary = (
        f"{progress.total} endpoints: {len(succeeded)} succeeded, {len(failed)} failed, "
        f"{len(progress.skipped)} skipped" + (", aborted" if aborted else "")
    )
    # No work only when every answered endpoint said so (204 or conveyor-work-found: false).
    work_found = not (succeeded and all(r.no_work for r in succeeded))
    if aborted:
        error = ClassifiedError.of(ErrorType.ABORTED, "the run was aborted before it finished")
        return RunnerOutcome(False, work_found, summary, error=error)
    if progress.first_error is not None:
        return RunnerOutcome(False, work_found, summary, error=progress.first_error)
    return RunnerOutcome(True, work_found, summary)
