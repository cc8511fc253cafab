"""run_http against a real HTTP server (tests/helpers/http_fake.py) on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import pytest
from google.protobuf import duration_pb2
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from conveyor.common.v1 import job_pb2, types_pb2
from conveyor_core.clock import SystemClock
from conveyor_core.context import correlation_scope
from conveyor_core.coordination import InProcessCoordination
from conveyor_executor.domain.failure import ErrorType
from conveyor_executor.runners import RunnerSettings, run_http
from conveyor_executor.runners.context import RunnerOutcome, StepKind, StepStatus
from tests.helpers.http_fake import HttpFake, Reply
from tests.helpers.run_context import MemoryRunContext

FAST = RunnerSettings(
    retry_initial_interval_seconds=0.01,
    retry_maximum_interval_seconds=0.05,
    retry_maximum_attempts=3,
    http_call_timeout_seconds=5.0,
    breaker_failure_threshold=100,
)


@pytest.fixture
def fake() -> Iterator[HttpFake]:
    with HttpFake() as server:
        yield server


def seconds(value: float) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromNanoseconds(int(value * 1e9))
    return out


def endpoint(
    fake: HttpFake, name: str, path: str, method: str = "GET", **fields
) -> job_pb2.HttpEndpoint:  # type: ignore[no-untyped-def]
    return job_pb2.HttpEndpoint(name=name, method=method, url=fake.url(path), **fields)


async def run(
    target: job_pb2.HttpTarget,
    ctx: MemoryRunContext | None = None,
    settings: RunnerSettings = FAST,
    endpoints: tuple[str, ...] = (),
) -> tuple[RunnerOutcome, MemoryRunContext]:
    ctx = ctx or MemoryRunContext()
    outcome = await run_http(
        target, endpoints, ctx, settings, InProcessCoordination(), SystemClock()
    )
    return outcome, ctx


# -- plans ----------------------------------------------------------------------


async def test_sequential_calls_in_order_and_records_each_call(fake: HttpFake) -> None:
    for path in ("/a", "/b", "/c"):
        fake.route("POST" if path == "/b" else "GET", path, Reply(200, body=path.encode()))
    body = types_pb2.Payload(data=b'{"n": 1}', content_type="application/json")
    target = job_pb2.HttpTarget(
        mode=job_pb2.PLAN_MODE_SEQUENTIAL,
        endpoints=[
            endpoint(fake, "a", "/a"),
            endpoint(fake, "b", "/b", method="POST", body=body),
            endpoint(fake, "c", "/c"),
        ],
    )
    outcome, ctx = await run(target)
    assert outcome.succeeded and outcome.error is None and outcome.work_found
    assert outcome.summary == "3 endpoints: 3 succeeded, 0 failed, 0 skipped"
    assert [r.path for r in fake.requests()] == ["/a", "/b", "/c"]
    assert fake.requests("/b")[0].body == b'{"n": 1}'
    assert fake.requests("/b")[0].headers["content-type"] == "application/json"
    call = ctx.steps_of(StepKind.HTTP_CALL, "b")[0]
    assert call.status is StepStatus.SUCCEEDED
    assert call.attributes["status_code"] == 200
    assert call.attributes["method"] == "POST"
    assert call.attributes["request_body"] == '{"n": 1}'
    assert call.attributes["response_body"] == "/b"
    assert call.attributes["request_bytes"] == 8 and call.attributes["response_bytes"] == 2
    assert call.attributes["duration_ms"] >= 0 and call.attributes["attempt"] == 1
    assert ctx.progress[-1][0] == 100.0


async def test_sequential_stops_at_the_first_failure_and_skips_the_rest(fake: HttpFake) -> None:
    fake.route("GET", "/a", Reply(200))
    fake.route("GET", "/b", Reply(400, body=b"bad field"))
    fake.route("GET", "/c", Reply(200))
    target = job_pb2.HttpTarget(
        mode=job_pb2.PLAN_MODE_SEQUENTIAL,
        endpoints=[endpoint(fake, "a", "/a"), endpoint(fake, "b", "/b"), endpoint(fake, "c", "/c")],
    )
    outcome, ctx = await run(target)
    assert not outcome.succeeded
    assert outcome.error is not None and outcome.error.type is ErrorType.INVALID_INPUT
    assert outcome.error.details == {"endpoint": "b", "status": "400"}
    assert not outcome.error.retryable
    assert len(fake.requests("/b")) == 1  # fail fast: no retry of a 400
    assert fake.requests("/c") == []
    assert ctx.statuses(StepKind.ENDPOINT_SKIPPED) == [("c", StepStatus.SKIPPED)]
    skipped = ctx.steps_of(StepKind.ENDPOINT_SKIPPED, "c")[0]
    assert skipped.attributes["reason"] == "an earlier endpoint failed"


async def test_parallel_respects_its_bound(fake: HttpFake) -> None:
    fake.route("GET", "/slow", Reply(200, delay=0.2))
    target = job_pb2.HttpTarget(
        mode=job_pb2.PLAN_MODE_PARALLEL,
        max_parallel=3,
        endpoints=[endpoint(fake, f"e{i}", "/slow") for i in range(7)],
    )
    outcome, _ = await run(target)
    assert outcome.succeeded
    assert len(fake.requests("/slow")) == 7
    assert fake.max_concurrent("/slow") == 3


async def test_parallel_default_bound_and_settings_cap(fake: HttpFake) -> None:
    fake.route("GET", "/slow", Reply(200, delay=0.2))
    target = job_pb2.HttpTarget(
        mode=job_pb2.PLAN_MODE_PARALLEL,
        max_parallel=50,  # more than the settings allow
        endpoints=[endpoint(fake, f"e{i}", "/slow") for i in range(6)],
    )
    outcome, _ = await run(target, settings=RunnerSettings(max_parallel=2))
    assert outcome.succeeded
    assert fake.max_concurrent("/slow") == 2


async def test_parallel_failure_does_not_stop_the_others(fake: HttpFake) -> None:
    fake.route("GET", "/ok", Reply(200, delay=0.1))
    fake.route("GET", "/denied", Reply(403))
    target = job_pb2.HttpTarget(
        mode=job_pb2.PLAN_MODE_PARALLEL,
        endpoints=[
            endpoint(fake, "ok1", "/ok"),
            endpoint(fake, "no", "/denied"),
            endpoint(fake, "ok2", "/ok"),
        ],
    )
    outcome, _ = await run(target)
    assert not outcome.succeeded
    assert outcome.error is not None and outcome.error.type is ErrorType.PERMISSION
    assert len(fake.requests("/ok")) == 2
    assert outcome.summary == "3 endpoints: 2 succeeded, 1 failed, 0 skipped"


async def test_dag_runs_dependencies_first_and_skips_dependents_of_a_failure(
    fake: HttpFake,
) -> None:
    fake.route("GET", "/root", Reply(200, delay=0.05))
    fake.route("GET", "/left", Reply(200))
    fake.route("GET", "/right", Reply(500))
    fake.route("GET", "/join", Reply(200))
    fake.route("GET", "/after-join", Reply(200))
    target = job_pb2.HttpTarget(
        mode=job_pb2.PLAN_MODE_DAG,
        endpoints=[
            endpoint(fake, "after-join", "/after-join", depends_on=["join"]),
            endpoint(fake, "join", "/join", depends_on=["left", "right"]),
            endpoint(fake, "left", "/left", depends_on=["root"]),
            endpoint(fake, "right", "/right", depends_on=["root"]),
            endpoint(fake, "root", "/root"),
        ],
    )
    outcome, ctx = await run(target)
    assert not outcome.succeeded
    assert outcome.error is not None and outcome.error.type is ErrorType.HANDLER_LOGIC
    assert outcome.error.details["endpoint"] == "right"
    paths = [r.path for r in fake.requests()]
    assert paths[0] == "/root" and sorted(paths[1:]) == ["/left", "/right"]
    skipped = {s.name: s.attributes["reason"] for s in ctx.steps_of(StepKind.ENDPOINT_SKIPPED)}
    assert skipped == {
        "join": "dependency 'right' did not succeed",
        "after-join": "dependency 'join' did not succeed",
    }
    assert outcome.summary == "5 endpoints: 2 succeeded, 1 failed, 2 skipped"


async def test_dag_parallelises_independent_branches_within_the_bound(fake: HttpFake) -> None:
    fake.route("GET", "/branch", Reply(200, delay=0.2))
    fake.route("GET", "/end", Reply(200))
    target = job_pb2.HttpTarget(
        mode=job_pb2.PLAN_MODE_DAG,
        max_parallel=2,
        endpoints=[
            *(endpoint(fake, f"b{i}", "/branch") for i in range(4)),
            endpoint(fake, "end", "/end", depends_on=[f"b{i}" for i in range(4)]),
        ],
    )
    outcome, _ = await run(target)
    assert outcome.succeeded
    assert fake.max_concurrent("/branch") == 2
    end = fake.requests("/end")[0]
    assert all(
        r.answered_at is not None and r.answered_at <= end.received_at
        for r in fake.requests("/branch")
    )


async def test_dag_cycle_is_refused_before_any_call(fake: HttpFake) -> None:
    fake.route("GET", "/x", Reply(200))
    target = job_pb2.HttpTarget(
        mode=job_pb2.PLAN_MODE_DAG,
        endpoints=[
            endpoint(fake, "a", "/x", depends_on=["b"]),
            endpoint(fake, "b", "/x", depends_on=["a"]),
        ],
    )
    outcome, ctx = await run(target)
    assert not outcome.succeeded
    assert outcome.error is not None and outcome.error.type is ErrorType.INVALID_INPUT
    assert "dependency cycle" in outcome.error.message
    assert fake.requests() == [] and ctx.steps == []


async def test_selected_endpoints_only_and_unselected_dependency_skips(fake: HttpFake) -> None:
    fake.route("GET", "/x", Reply(200))
    target = job_pb2.HttpTarget(
        mode=job_pb2.PLAN_MODE_DAG,
        endpoints=[
            endpoint(fake, "a", "/x"),
            endpoint(fake, "b", "/x", depends_on=["a"]),
            endpoint(fake, "c", "/x"),
        ],
    )
    outcome, ctx = await run(target, endpoints=("b", "c"))
    assert outcome.succeeded  # a skip for a missing dependency is not a failure
    assert len(fake.requests("/x")) == 1
    skipped = {s.name: s.attributes["reason"] for s in ctx.steps_of(StepKind.ENDPOINT_SKIPPED)}
    assert skipped == {
        "a": "not selected for this run",
        "b": "dependency 'a' is not in this run's plan",
    }
    unknown, _ = await run(target, endpoints=("zzz",))
    assert unknown.error is not None and unknown.error.type is ErrorType.INVALID_INPUT


# -- retries, timeouts, abort ---------------------------------------------------------


async def test_transient_failures_are_retried_until_success(fake: HttpFake) -> None:
    fake.route("GET", "/flaky", Reply(503), Reply(502), Reply(200, body=b"ok"))
    target = job_pb2.HttpTarget(endpoints=[endpoint(fake, "flaky", "/flaky")])
    outcome, ctx = await run(target)
    assert outcome.succeeded
    calls = ctx.steps_of(StepKind.HTTP_CALL, "flaky")
    assert [c.attributes["status_code"] for c in calls] == [503, 502, 200]
    assert [c.attributes["attempt"] for c in calls] == [1, 2, 3]
    assert [c.status for c in calls] == [StepStatus.FAILED, StepStatus.FAILED, StepStatus.SUCCEEDED]
    assert all(0 < c.attributes["retry_in_seconds"] <= 0.06 for c in calls[:2])
    assert "retry_in_seconds" not in calls[2].attributes


async def test_retries_exhausted_report_the_last_error(fake: HttpFake) -> None:
    fake.route("GET", "/down", Reply(503), Reply(504))
    policy = types_pb2.RetryPolicy(maximum_attempts=4, initial_interval=seconds(0.01))
    target = job_pb2.HttpTarget(endpoints=[endpoint(fake, "down", "/down", retry_policy=policy)])
    outcome, _ = await run(target)
    assert len(fake.requests("/down")) == 4
    assert outcome.error is not None and outcome.error.type is ErrorType.TIMEOUT  # the 504
    assert outcome.error.retryable and outcome.error.details["status"] == "504"


async def test_retry_after_is_honoured(fake: HttpFake) -> None:
    fake.route("GET", "/limited", Reply(429, headers={"Retry-After": "1"}), Reply(200))
    target = job_pb2.HttpTarget(endpoints=[endpoint(fake, "limited", "/limited")])
    outcome, ctx = await run(target)
    assert outcome.succeeded
    first, second = fake.requests("/limited")
    assert second.received_at - first.received_at >= 0.95
    limited = ctx.steps_of(StepKind.HTTP_CALL, "limited")[0]
    assert limited.error is not None and limited.error.type is ErrorType.RATE_LIMITED
    assert limited.attributes["retry_in_seconds"] == 1.0


async def test_retry_after_is_capped_by_the_settings(fake: HttpFake) -> None:
    fake.route("GET", "/limited", Reply(429, headers={"Retry-After": "3600"}), Reply(200))
    target = job_pb2.HttpTarget(endpoints=[endpoint(fake, "limited", "/limited")])
    settings = RunnerSettings(retry_after_max_seconds=0.05, breaker_failure_threshold=100)
    started = time.monotonic()
    outcome, ctx = await run(target, settings=settings)
    assert outcome.succeeded and time.monotonic() - started < 5
    assert ctx.steps_of(StepKind.HTTP_CALL)[0].attributes["retry_in_seconds"] == 0.05


async def test_per_call_timeout_is_classified_and_retried(fake: HttpFake) -> None:
    fake.route("GET", "/slow", Reply(200, delay=5.0), Reply(200))
    target = job_pb2.HttpTarget(endpoints=[endpoint(fake, "slow", "/slow", timeout=seconds(0.2))])
    started = time.monotonic()
    outcome, ctx = await run(target)
    assert outcome.succeeded and time.monotonic() - started < 3
    first = ctx.steps_of(StepKind.HTTP_CALL, "slow")[0]
    assert first.error is not None and first.error.type is ErrorType.TIMEOUT
    assert "0.2s" in first.error.message
    assert 150 <= first.attributes["duration_ms"] < 2000


async def test_connection_refused_is_a_network_error(fake: HttpFake) -> None:
    port = fake.port
    fake.stop()
    target = job_pb2.HttpTarget(
        endpoints=[job_pb2.HttpEndpoint(name="gone", method="GET", url=f"http://127.0.0.1:{port}/")]
    )
    outcome, ctx = await run(target)
    assert outcome.error is not None and outcome.error.type is ErrorType.NETWORK
    assert outcome.error.retryable
    assert len(ctx.steps_of(StepKind.HTTP_CALL)) == 3


async def test_abort_during_a_slow_call_is_prompt(fake: HttpFake) -> None:
    fake.route("GET", "/first", Reply(200))
    fake.route("GET", "/slow", Reply(200, delay=30.0))
    fake.route("GET", "/never", Reply(200))
    target = job_pb2.HttpTarget(
        endpoints=[
            endpoint(fake, "first", "/first"),
            endpoint(fake, "slow", "/slow"),
            endpoint(fake, "never", "/never"),
        ]
    )
    ctx = MemoryRunContext()
    task = asyncio.create_task(run(target, ctx))
    deadline = time.monotonic() + 10
    while not fake.requests("/slow"):
        assert time.monotonic() < deadline, "the slow call never started"
        await asyncio.sleep(0.01)
    aborted_at = time.monotonic()
    ctx.cancelled.set()
    outcome, _ = await asyncio.wait_for(task, 5)
    # Far short of the slow call's 30 s: the abort did not wait for the call (a bound on
    # behaviour, not on speed; the connection check below names the mechanism).
    assert time.monotonic() - aborted_at < 10.0
    assert not outcome.succeeded
    assert outcome.error is not None and outcome.error.type is ErrorType.ABORTED
    assert ctx.statuses(StepKind.HTTP_CALL) == [
        ("first", StepStatus.SUCCEEDED),
        ("slow", StepStatus.ABORTED),
    ]
    assert ctx.statuses(StepKind.ENDPOINT_SKIPPED) == [("never", StepStatus.ABORTED)]
    assert fake.requests("/never") == []
    slow = fake.requests("/slow")[0]
    while not slow.disconnected:  # the call was really abandoned: the connection is closed
        assert time.monotonic() < deadline, "the aborted call's connection stayed open"
        await asyncio.sleep(0.01)
    assert slow.answered_at is None


async def test_abort_during_retry_backoff_is_prompt(fake: HttpFake) -> None:
    fake.route("GET", "/limited", Reply(429, headers={"Retry-After": "30"}))
    target = job_pb2.HttpTarget(endpoints=[endpoint(fake, "limited", "/limited")])
    ctx = MemoryRunContext()
    task = asyncio.create_task(run(target, ctx))
    deadline = time.monotonic() + 10
    while not ctx.steps_of(StepKind.HTTP_CALL):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    ctx.cancelled.set()
    outcome, _ = await asyncio.wait_for(task, 2)
    assert outcome.error is not None and outcome.error.type is ErrorType.ABORTED
    assert len(fake.requests("/limited")) == 1


# -- work found, secrets, scrubbing ---------------------------------------------------


async def test_work_found_is_false_only_when_every_answer_says_so(fake: HttpFake) -> None:
    fake.route("GET", "/empty", Reply(204))
    fake.route("GET", "/nothing", Reply(200, headers={"conveyor-work-found": "false"}))
    fake.route("GET", "/work", Reply(200))
    none = job_pb2.HttpTarget(
        endpoints=[endpoint(fake, "a", "/empty"), endpoint(fake, "b", "/nothing")]
    )
    outcome, _ = await run(none)
    assert outcome.succeeded and not outcome.work_found
    some = job_pb2.HttpTarget(
        endpoints=[endpoint(fake, "a", "/empty"), endpoint(fake, "c", "/work")]
    )
    outcome, _ = await run(some)
    assert outcome.succeeded and outcome.work_found


async def test_secrets_are_sent_but_never_recorded(fake: HttpFake) -> None:
    fake.route("POST", "/echo", Reply(200, echo_headers=True))
    secret_header = job_pb2.HeaderValue(secret=job_pb2.SecretRef(name="billing-token"))
    target = job_pb2.HttpTarget(
        endpoints=[
            endpoint(
                fake,
                "echo",
                "/echo?api_key=sk-LIVE42",
                method="POST",
                headers={
                    "Authorization": job_pb2.HeaderValue(value="Bearer literal-cred"),
                    "X-Billing-Token": secret_header,
                    "X-Plain": job_pb2.HeaderValue(value="visible"),
                },
                body=types_pb2.Payload(data=b"password=tr0ub4dor&key=sk-LIVE42"),
            )
        ]
    )
    ctx = MemoryRunContext(secrets={"billing-token": "tok-very-secret"})
    settings = RunnerSettings(scrub_patterns=(r"sk-[A-Z0-9]+", r"(?<=password=)[^&]+"))
    outcome, _ = await run(target, ctx, settings)
    assert outcome.succeeded
    sent = fake.requests("/echo")[0]
    assert sent.headers["x-billing-token"] == "tok-very-secret"
    assert sent.headers["authorization"] == "Bearer literal-cred"
    call = ctx.steps_of(StepKind.HTTP_CALL, "echo")[0]
    assert call.attributes["request_headers"] == {
        "Authorization": "***",
        "X-Billing-Token": "[secret:billing-token]",
        "X-Plain": "visible",
    }
    assert call.attributes["url"].endswith("/echo?api_key=***")
    assert call.attributes["request_body"] == "password=***&key=***"
    recorded = json.dumps([dict(s.attributes) for s in ctx.steps], default=str)
    for leaked in ("tok-very-secret", "literal-cred", "sk-LIVE42", "tr0ub4dor"):
        assert leaked not in recorded
    echoed = json.loads(call.attributes["response_body"])  # the echo carried the secret back
    assert echoed["x-billing-token"] == "***"


async def test_unknown_secret_fails_before_any_call_naming_only_the_secret(
    fake: HttpFake,
) -> None:
    fake.route("GET", "/x", Reply(200))
    target = job_pb2.HttpTarget(
        endpoints=[
            endpoint(
                fake,
                "x",
                "/x",
                headers={
                    "Authorization": job_pb2.HeaderValue(
                        secret=job_pb2.SecretRef(name="missing-one")
                    )
                },
            )
        ]
    )
    outcome, _ = await run(target, MemoryRunContext(secrets={"other": "v4lue"}))
    assert outcome.error is not None and outcome.error.type is ErrorType.INVALID_INPUT
    assert "missing-one" in outcome.error.message and "v4lue" not in outcome.error.message
    assert outcome.error.details["secret"] == "missing-one"
    assert fake.requests() == []


async def test_large_bodies_are_truncated_in_records_with_a_marker(fake: HttpFake) -> None:
    fake.route("GET", "/big", Reply(200, body=b"z" * 5000))
    target = job_pb2.HttpTarget(endpoints=[endpoint(fake, "big", "/big")])
    settings = RunnerSettings(max_recorded_body_bytes=100, max_response_bytes=1000)
    outcome, ctx = await run(target, settings=settings)
    assert outcome.succeeded
    call = ctx.steps_of(StepKind.HTTP_CALL)[0]
    assert call.attributes["response_body"] == "z" * 100 + "\n[... truncated 900 bytes ...]\n"
    assert call.attributes["response_body_truncated"] is True
    assert call.attributes["response_bytes"] == 1000  # read no further than the limit


# -- tracing ------------------------------------------------------------------------


async def test_calls_are_client_spans_whose_context_reaches_the_endpoint(
    fake: HttpFake, spans: InMemorySpanExporter
) -> None:
    fake.route("GET", "/traced", Reply(503), Reply(200))
    target = job_pb2.HttpTarget(endpoints=[endpoint(fake, "traced", "/traced")])
    with (
        correlation_scope("corr-7"),
        trace.get_tracer("test").start_as_current_span("run") as run_span,
    ):
        outcome, _ = await run(target, MemoryRunContext(run_id="run-traced"))
    assert outcome.succeeded
    trace_id = run_span.get_span_context().trace_id
    calls = [
        s
        for s in spans.get_finished_spans()
        if s.name == "http traced" and s.attributes.get("conveyor.run_id") == "run-traced"
    ]
    assert [s.attributes["http.response.status_code"] for s in calls] == [503, 200]
    assert {s.context.trace_id for s in calls} == {trace_id}
    assert calls[0].kind is trace.SpanKind.CLIENT
    assert calls[0].status.status_code is trace.StatusCode.ERROR
    received = fake.requests("/traced")
    for request, span in zip(received, calls, strict=True):
        assert request.headers["traceparent"].split("-")[1:3] == [
            f"{trace_id:032x}",
            f"{span.context.span_id:016x}",
        ]
        assert request.headers["x-correlation-id"] == "corr-7"
