"""The whole path: schedule -> queue -> executor -> journal, as one trace.

The four services run as separate gRPC servers on PostgreSQL + Redis (as in
Kubernetes), and again as one process on the embedded default. An interval
schedule fires a job calling a local HTTP server; runs succeed, a flaky endpoint
is retried, a dead endpoint's breaker opens, and every step is in the journal.
One work order's schedule fire, submit, lease, run, HTTP calls and journal
appends share one trace id and one correlation id.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
from google.protobuf.duration_pb2 import Duration
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from conveyor.common.v1 import job_pb2, types_pb2
from conveyor.events.v1 import messages_pb2 as events_pb
from conveyor.events.v1 import service_pb2_grpc as events_grpc
from conveyor.executor.v1 import messages_pb2 as executor_pb
from conveyor.executor.v1 import service_pb2 as executor_rpc
from conveyor.executor.v1 import service_pb2_grpc as executor_grpc
from conveyor.scheduler.v1 import messages_pb2 as scheduler_pb
from conveyor.scheduler.v1 import service_pb2 as scheduler_rpc
from conveyor.scheduler.v1 import service_pb2_grpc as scheduler_grpc
from conveyor_core.grpc import create_channel
from conveyor_core.runtime import Platform
from conveyor_core.settings import CoreSettings
from conveyor_core.telemetry import configure_tracing
from tests.helpers.http_fake import HttpFake, Reply
from tests.helpers.journal import read_journal

NAMESPACE = "e2e"
T = TypeVar("T")


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    configure_tracing("conveyor-test", CoreSettings(), extra_exporter=exporter)
    return exporter


@pytest.fixture
def fast_platform(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings of a platform that shows a few runs within seconds."""
    for name, value in {
        "CONVEYOR_EXECUTOR_NAMESPACE": NAMESPACE,
        "CONVEYOR_EXECUTOR_QUEUES": '["jobs"]',
        "CONVEYOR_EXECUTOR_LEASE_WAIT_SECONDS": "0.5",
        "CONVEYOR_EXECUTOR_RETRY_INITIAL_INTERVAL_SECONDS": "0.05",
        "CONVEYOR_SCHEDULER_TICK_SECONDS": "0.1",
        "CONVEYOR_SCHEDULER_OUTCOME_POLL_SECONDS": "0.2",
        "CONVEYOR_QUEUE_RELAY_POLL_SECONDS": "0.1",
    }.items():
        monkeypatch.setenv(name, value)


@dataclass
class Deployment:
    """Where the services answer: one address each (the same one when embedded)."""

    scheduler: str
    executor: str
    events: str
    platforms: list[Platform]

    async def stop(self) -> None:
        for platform in reversed(self.platforms):
            await platform.stop(grace=1)


async def start_separately(core: CoreSettings) -> Deployment:
    """Four servers, as four Kubernetes Deployments would run them."""
    platforms: list[Platform] = []
    try:
        events = Platform(core, ["events"])
        platforms.append(events)
        events_address = f"127.0.0.1:{await events.start('127.0.0.1:0')}"
        peers = core.model_copy(
            update={"journal_address": events_address, "events_address": events_address}
        )
        queue = Platform(peers, ["queue"])
        platforms.append(queue)
        queue_address = f"127.0.0.1:{await queue.start('127.0.0.1:0')}"
        peers = peers.model_copy(update={"queue_address": queue_address})
        addresses = []
        for name in ("scheduler", "executor"):
            platform = Platform(peers, [name])
            platforms.append(platform)
            addresses.append(f"127.0.0.1:{await platform.start('127.0.0.1:0')}")
    except BaseException:
        for platform in reversed(platforms):
            await platform.stop(grace=0)
        raise
    return Deployment(addresses[0], addresses[1], events_address, platforms)


async def start_embedded(core: CoreSettings) -> Deployment:
    """`conveyor run`: every service in one process on one port."""
    platform = Platform(core)
    address = f"127.0.0.1:{await platform.start('127.0.0.1:0')}"
    return Deployment(address, address, address, [platform])


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


async def eventually(probe: Callable[[], Awaitable[T | None]], what: str, limit: float = 45.0) -> T:
    """Poll `probe` until it returns something truthy, or fail after `limit` seconds."""
    deadline = time.monotonic() + limit
    while True:
        found = await probe()
        if found:
            return found
        assert time.monotonic() < deadline, f"not seen within {limit}s: {what}"
        await asyncio.sleep(0.1)


def http_job(*endpoints: job_pb2.HttpEndpoint, breaker_threshold: int = 0) -> scheduler_pb.Job:
    target = job_pb2.HttpTarget(
        endpoints=endpoints,
        mode=job_pb2.PLAN_MODE_SEQUENTIAL,
        circuit_breaker=job_pb2.CircuitBreakerPolicy(
            failure_threshold=breaker_threshold, cool_down=Duration(seconds=600)
        ),
    )
    return scheduler_pb.Job(
        target=job_pb2.JobTarget(http=target),
        queue="jobs",
        retry_policy=types_pb2.RetryPolicy(
            maximum_attempts=1, initial_interval=Duration(nanos=50_000_000)
        ),
    )


def endpoint(name: str, url: str, attempts: int = 3) -> job_pb2.HttpEndpoint:
    return job_pb2.HttpEndpoint(
        name=name,
        method="GET",
        url=url,
        timeout=Duration(seconds=5),
        retry_policy=types_pb2.RetryPolicy(
            maximum_attempts=attempts,
            initial_interval=Duration(nanos=20_000_000),
            maximum_interval=Duration(nanos=100_000_000),
        ),
    )


async def schedule_every_second(
    scheduler: scheduler_grpc.SchedulerServiceStub, job_id: str, job: scheduler_pb.Job
) -> scheduler_pb.Schedule:
    parent = f"namespaces/{NAMESPACE}"
    created = await scheduler.CreateJob(
        scheduler_rpc.CreateJobRequest(parent=parent, job_id=job_id, job=job)
    )
    reply = await scheduler.CreateSchedule(
        scheduler_rpc.CreateScheduleRequest(
            parent=created.job.name,
            schedule_id="every-second",
            schedule=scheduler_pb.Schedule(
                interval=scheduler_pb.IntervalSpec(every=Duration(seconds=1)),
                overlap_policy=scheduler_pb.OVERLAP_POLICY_ALLOW_ALL,
            ),
        )
    )
    return reply.schedule


async def runs_of(executor: executor_grpc.ExecutorServiceStub, job: str) -> list[executor_pb.Run]:
    reply = await executor.ListRuns(
        executor_rpc.ListRunsRequest(parent=f"namespaces/{NAMESPACE}", job=job, page_size=100)
    )
    return list(reply.runs)


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
