"""The whole path: schedule -> queue -> executor -> journal, as one trace.

The four services run as separate gRPC servers on PostgreSQL + Redis (as in
Kubernetes), and again as one process on the embedded default. An interval
schedule fires a job calling a local HTTP server; runs succeed, a flaky endpoint
is retried, a dead endpoint's breaker opens, and every step is in the journal.
One work order's schedule fire, submit, lease, run, HTTP calls and journal
appends share one trace id and one correlation id.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from conveyor.events.v1 import messages_pb2 as events_pb
from conveyor.events.v1 import service_pb2_grpc as events_grpc
from conveyor.executor.v1 import messages_pb2 as executor_pb
from conveyor.executor.v1 import service_pb2 as executor_rpc
from conveyor.executor.v1 import service_pb2_grpc as executor_grpc
from conveyor.scheduler.v1 import service_pb2_grpc as scheduler_grpc
from conveyor_core.grpc import create_channel
from conveyor_core.settings import CoreSettings
from tests.helpers.e2e import (
    FAST_PLATFORM,
    NAMESPACE,
    Deployment,
    endpoint,
    eventually,
    http_job,
    runs_of,
    schedule_every_second,
    start_embedded,
    start_separately,
)
from tests.helpers.http_fake import HttpFake, Reply
from tests.helpers.journal import read_journal


@pytest.fixture
def fast_platform(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings of a platform that shows a few runs within seconds."""
    for name, value in FAST_PLATFORM.items():
        monkeypatch.setenv(name, value)


@pytest.fixture(params=["separate-postgres", "embedded-sqlite"])
def layout(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, CoreSettings]:
    if request.param == "separate-postgres":
        core: CoreSettings = request.getfixturevalue("postgres_core")
        return request.param, core
    return request.param, CoreSettings(data_dir=tmp_path)


@pytest.fixture
async def deployment(
    layout: tuple[str, CoreSettings], fast_platform: None
) -> AsyncIterator[Deployment]:
    kind, core = layout
    started = await (
        start_separately(core) if kind == "separate-postgres" else start_embedded(core)
    )
    yield started
    await started.stop()


async def steps_of(
    executor: executor_grpc.ExecutorServiceStub, run: executor_pb.Run
) -> list[executor_pb.RunStep]:
    reply = await executor.ListRunSteps(executor_rpc.ListRunStepsRequest(parent=run.name))
    return list(reply.steps)


def trace_of(spans: InMemorySpanExporter, trace_id: str) -> list[ReadableSpan]:
    return [s for s in spans.get_finished_spans() if format(s.context.trace_id, "032x") == trace_id]


async def test_a_schedule_runs_http_jobs_end_to_end_as_one_trace(
    deployment: Deployment, spans: InMemorySpanExporter
) -> None:
    with HttpFake() as web:
        web.route("GET", "/ok", Reply(200, body=b"fine"))
        web.route("GET", "/flaky", Reply(503), Reply(200, body=b"at last"))
        web.route("GET", "/dead", Reply(503))
        async with (
            create_channel(deployment.scheduler) as scheduler_channel,
            create_channel(deployment.executor) as executor_channel,
            create_channel(deployment.events) as events_channel,
        ):
            scheduler = scheduler_grpc.SchedulerServiceStub(scheduler_channel)
            executor = executor_grpc.ExecutorServiceStub(executor_channel)
            journal = events_grpc.JournalServiceStub(events_channel)

            good = http_job(endpoint("ok", web.url("/ok")), endpoint("flaky", web.url("/flaky")))
            await schedule_every_second(scheduler, "good", good)
            dead = http_job(endpoint("dead", web.url("/dead"), attempts=1), breaker_threshold=2)
            await schedule_every_second(scheduler, "dead", dead)
            good_job, dead_job = (
                f"namespaces/{NAMESPACE}/jobs/good",
                f"namespaces/{NAMESPACE}/jobs/dead",
            )

            async def two_good_runs() -> list[executor_pb.Run] | None:
                done = [
                    r
                    for r in await runs_of(executor, good_job)
                    if r.state == executor_pb.RUN_STATE_SUCCEEDED
                ]
                return done if len(done) >= 2 else None

            succeeded = await eventually(two_good_runs, "two succeeded runs of the good job")

            async def refused_by_breaker() -> executor_pb.Run | None:
                for run in await runs_of(executor, dead_job):
                    if run.failure.type == "circuit_open":
                        return run
                return None

            refused = await eventually(
                refused_by_breaker, "a dead-endpoint run refused by the breaker"
            )
            assert not refused.failure.retryable or refused.failure.type == "circuit_open"

            # The flaky endpoint answered 503 once, then succeeded on retry within one run.
            flaky_calls = [
                step
                for run in succeeded
                for step in await steps_of(executor, run)
                if step.kind == "http_call" and step.display_name == "flaky"
            ]
            statuses = [step.attributes["status_code"] for step in flaky_calls]
            assert 503 in statuses and 200 in statuses
            for done in succeeded:
                assert "ok" in {step.display_name for step in await steps_of(executor, done)}

            # Every step of one order is in the journal, under one correlation id and trace id.
            run = succeeded[0]
            assert run.correlation_id and run.trace_id

            async def whole_trail() -> list[events_pb.JournalRecord] | None:
                records = await read_journal(journal, correlation_id=run.correlation_id)
                types = {r.type for r in records}
                wanted = {
                    "scheduler.schedule.fired",
                    "queue.work_order.queued",
                    "queue.work_order.leased",
                    "queue.work_order.succeeded",
                    "executor.run.started",
                    "executor.run.succeeded",
                }
                return records if wanted <= types else None

            trail = await eventually(whole_trail, "the order's whole journal trail")
            assert {r.trace_id for r in trail} == {run.trace_id}
            assert {r.correlation_id for r in trail} == {run.correlation_id}

    # Spans: the fire, the submit, the lease, the run and each HTTP call are one trace,
    # and each carries the order's correlation id.
    order_spans = trace_of(spans, run.trace_id)
    names = {s.name for s in order_spans}
    assert {
        "scheduler.fire",
        "work_order.submitted",  # the queue's per-order span: the submit is a batch call
        "work_order.leased",
        "executor.run",
        "http ok",
        "http flaky",
        "work_order.completed",
    } <= names, names
    assert {s.attributes.get("conveyor.correlation_id") for s in order_spans} == {
        run.correlation_id
    }, sorted((s.name, s.attributes.get("conveyor.correlation_id")) for s in order_spans)
