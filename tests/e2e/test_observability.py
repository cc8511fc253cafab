"""Operability end to end: the four services as four `conveyor serve` processes on
PostgreSQL + Redis, exporting traces to a real OTLP/gRPC receiver and metrics on /metrics.

* Every metric a Prometheus rule (deploy/observability/alerts.yml) or a Grafana panel
  (grafana-dashboard.json) names is exported by a running platform.
* One work order's spans from all four services arrive under one trace id.
* With an OTLP endpoint where nothing listens: no ERROR lines, one warning, and a stop
  bounded by CONVEYOR_OTLP_SHUTDOWN_TIMEOUT_SECONDS rather than the export timeout.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from google.protobuf.duration_pb2 import Duration
from prometheus_client.parser import text_string_to_metric_families

from conveyor.events.v1 import messages_pb2 as events_pb
from conveyor.events.v1 import service_pb2 as events_rpc
from conveyor.events.v1 import service_pb2_grpc as events_grpc
from conveyor.executor.v1 import messages_pb2 as executor_pb
from conveyor.executor.v1 import service_pb2_grpc as executor_grpc
from conveyor.queue.v1 import service_pb2 as queue_rpc
from conveyor.queue.v1 import service_pb2_grpc as queue_grpc
from conveyor.scheduler.v1 import messages_pb2 as scheduler_pb
from conveyor.scheduler.v1 import service_pb2 as scheduler_rpc
from conveyor.scheduler.v1 import service_pb2_grpc as scheduler_grpc
from conveyor_core.grpc import create_channel
from conveyor_core.settings import CoreSettings
from tests.helpers.e2e import FAST_PLATFORM, NAMESPACE, endpoint, eventually, http_job, runs_of
from tests.helpers.http_fake import HttpFake, Reply
from tests.helpers.otlp_receiver import OtlpReceiver
from tests.helpers.platform_processes import (
    PlatformProcesses,
    base_environment,
    free_port,
)

OBSERVABILITY = Path(__file__).resolve().parents[2] / "deploy" / "observability"
SERVICE_NAMES = {"conveyor-events", "conveyor-queue", "conveyor-scheduler", "conveyor-executor"}
METRIC_NAME = re.compile(r"\bconveyor_[a-z0-9_]+")


def names_used_by_rules_and_panels() -> set[str]:
    rules = yaml.safe_load((OBSERVABILITY / "alerts.yml").read_text())
    expressions = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    dashboard = json.loads((OBSERVABILITY / "grafana-dashboard.json").read_text())
    expressions += [
        target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])
    ]
    return {name for expression in expressions for name in METRIC_NAME.findall(expression)}


def exported_names(text: str) -> set[str]:
    return {
        sample.name for family in text_string_to_metric_families(text) for sample in family.samples
    }


def environment(core: CoreSettings, **extra: str) -> dict[str, str]:
    return base_environment(
        CONVEYOR_DATABASE_URL=core.database_url,
        CONVEYOR_REDIS_URL=core.redis_url,
        CONVEYOR_REDIS_KEY_PREFIX=core.redis_key_prefix,
        CONVEYOR_DATA_DIR=str(core.data_dir),
        # Gauges refreshed at every scrape, spans exported within 0.2 s.
        CONVEYOR_QUEUE_METRICS_REFRESH_SECONDS="0.2",
        CONVEYOR_EVENTS_METRICS_REFRESH_SECONDS="0.2",
        CONVEYOR_EXECUTOR_METRICS_REFRESH_SECONDS="0.2",
        OTEL_BSP_SCHEDULE_DELAY="200",
        **FAST_PLATFORM,
        **extra,
    )


@pytest.fixture
async def receiver() -> AsyncIterator[OtlpReceiver]:
    async with OtlpReceiver() as started:
        yield started


@pytest.fixture
async def platform(
    postgres_core: CoreSettings, receiver: OtlpReceiver
) -> AsyncIterator[PlatformProcesses]:
    started = await PlatformProcesses.start(
        environment(
            postgres_core,
            CONVEYOR_OTLP_ENDPOINT=receiver.endpoint,
            # Off by default (their export cost); on here, so the event store's part of
            # the order's life shows in its trace too.
            CONVEYOR_EVENTS_JOURNAL_RECORD_SPANS="true",
        )
    )
    yield started
    await started.stop()


async def schedule(
    scheduler: scheduler_grpc.SchedulerServiceStub,
    job_id: str,
    job: scheduler_pb.Job,
    overlap: int = scheduler_pb.OVERLAP_POLICY_ALLOW_ALL,
) -> None:
    created = await scheduler.CreateJob(
        scheduler_rpc.CreateJobRequest(parent=f"namespaces/{NAMESPACE}", job_id=job_id, job=job)
    )
    await scheduler.CreateSchedule(
        scheduler_rpc.CreateScheduleRequest(
            parent=created.job.name,
            schedule_id="every-second",
            schedule=scheduler_pb.Schedule(
                interval=scheduler_pb.IntervalSpec(every=Duration(seconds=1)),
                overlap_policy=overlap,
            ),
        )
    )


async def exercise_events(events: events_grpc.EventStoreServiceStub) -> None:
    """Publish, reserve, consume, release and skip once, so each counter has a point."""
    parent = f"namespaces/{NAMESPACE}/topics/observed"
    await events.CreateTopic(
        events_rpc.CreateTopicRequest(
            parent=f"namespaces/{NAMESPACE}", topic_id="observed", topic=events_pb.Topic()
        )
    )
    drafts = [events_pb.EventDraft(message_id=f"m{i}", title=f"event {i}") for i in range(4)]
    await events.PublishEvents(events_rpc.PublishEventsRequest(parent=parent, events=drafts))
    reserved = await events.ReserveEvents(
        events_rpc.ReserveEventsRequest(parent=parent, run_id="run-1", max_events=3)
    )
    sequences = [e.sequence for e in reserved.events]
    await events.ConsumeEvents(
        events_rpc.ConsumeEventsRequest(parent=parent, run_id="run-1", sequences=sequences[:1])
    )
    await events.ReleaseEvents(events_rpc.ReleaseEventsRequest(parent=parent, run_id="run-1"))
    await events.SkipEvent(
        events_rpc.SkipEventRequest(
            name=f"{parent}/events/{sequences[1]}", skipped_by="ops", reason="test"
        )
    )


async def test_metrics_used_by_rules_and_panels_are_exported_and_an_order_is_one_trace(
    platform: PlatformProcesses, receiver: OtlpReceiver
) -> None:
    with HttpFake() as web:
        web.route("GET", "/ok", Reply(200, body=b"fine"))
        web.route("GET", "/dead", Reply(503))
        web.route("GET", "/slow", Reply(200, delay=1.5))
        async with (
            create_channel(platform.address("scheduler")) as scheduler_channel,
            create_channel(platform.address("executor")) as executor_channel,
            create_channel(platform.address("events")) as events_channel,
            create_channel(platform.address("queue")) as queue_channel,
        ):
            scheduler = scheduler_grpc.SchedulerServiceStub(scheduler_channel)
            executor = executor_grpc.ExecutorServiceStub(executor_channel)
            await schedule(scheduler, "good", http_job(endpoint("ok", web.url("/ok"))))
            dead = http_job(endpoint("dead", web.url("/dead"), attempts=1), breaker_threshold=2)
            await schedule(scheduler, "dead", dead)
            slow = http_job(endpoint("slow", web.url("/slow"), attempts=1))
            await schedule(scheduler, "slow", slow, scheduler_pb.OVERLAP_POLICY_SKIP)
            await exercise_events(events_grpc.EventStoreServiceStub(events_channel))

            good_job = f"namespaces/{NAMESPACE}/jobs/good"
            dead_job = f"namespaces/{NAMESPACE}/jobs/dead"

            async def succeeded() -> executor_pb.Run | None:
                runs = await runs_of(executor, good_job)
                done = [r for r in runs if r.state == executor_pb.RUN_STATE_SUCCEEDED]
                return done[0] if done else None

            run = await eventually(succeeded, "a succeeded run of the good job")

            async def breaker_refused() -> bool:
                runs = await runs_of(executor, dead_job)
                return any(r.failure.type == "circuit_open" for r in runs)

            await eventually(breaker_refused, "a dead-endpoint run refused by the breaker")
            queue = queue_grpc.WorkOrderQueueServiceStub(queue_channel)
            await queue.RedriveWorkOrders(
                queue_rpc.RedriveWorkOrdersRequest(
                    parent=f"namespaces/{NAMESPACE}/queues/jobs",
                    reason="observability test",
                    requested_by="ops",
                    request_id="redrive-1",
                )
            )

            wanted = names_used_by_rules_and_panels()
            assert len(wanted) > 30, wanted

            async def all_exported() -> set[str] | None:
                texts = await asyncio.gather(
                    *(asyncio.to_thread(platform.scrape, name) for name in platform.services)
                )
                missing = wanted - set().union(*(exported_names(t) for t in texts))
                all_exported.missing = missing  # type: ignore[attr-defined]
                return None if missing else wanted

            try:
                await eventually(all_exported, "every metric of the rules and panels", 30)
            except AssertionError:
                missing = sorted(all_exported.missing)  # type: ignore[attr-defined]
                raise AssertionError(f"not exported by any service: {missing}") from None

    # The order's spans, from all four processes, under the run's trace id.
    async def whole_trace() -> set[str] | None:
        services = {span.service for span in receiver.spans_of(run.trace_id)}
        return services if services >= SERVICE_NAMES else None

    try:
        await eventually(whole_trace, "spans of all four services in the order's trace", 30)
    except AssertionError:
        seen = sorted({(s.service, s.name) for s in receiver.spans_of(run.trace_id)})
        raise AssertionError(f"trace {run.trace_id} has only {seen}") from None
    names = {(s.service, s.name) for s in receiver.spans_of(run.trace_id)}
    assert ("conveyor-scheduler", "scheduler.fire") in names
    assert ("conveyor-queue", "work_order.leased") in names
    assert ("conveyor-executor", "executor.run") in names
    assert ("conveyor-events", "journal.append") in names


async def test_an_unreachable_collector_costs_one_warning_and_no_slow_stop(
    tmp_path: Path,
) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    env = base_environment(
        CONVEYOR_DATA_DIR=str(tmp_path),
        CONVEYOR_OTLP_ENDPOINT=nowhere,
        # Long enough that the SDK's own retrying of the last batch would be seen.
        CONVEYOR_OTLP_TIMEOUT_SECONDS="30",
        CONVEYOR_OTLP_SHUTDOWN_TIMEOUT_SECONDS="1",
        CONVEYOR_SHUTDOWN_GRACE_SECONDS="0",
        OTEL_BSP_SCHEDULE_DELAY="100",
    )
    platform = await PlatformProcesses.start(env, names=("queue",))
    try:
        async with create_channel(platform.address("queue")) as channel:
            queue = queue_grpc.WorkOrderQueueServiceStub(channel)
            for _ in range(5):
                await queue.SubmitWorkOrder(
                    queue_rpc.SubmitWorkOrderRequest(parent="namespaces/otlp/queues/jobs")
                )

        async def warned() -> bool:
            return any("trace export to" in line for line in platform.logs("queue"))

        await eventually(warned, "the export failure warning", 60)
        async with create_channel(platform.address("queue")) as channel:
            queue = queue_grpc.WorkOrderQueueServiceStub(channel)
            await queue.SubmitWorkOrder(
                queue_rpc.SubmitWorkOrderRequest(parent="namespaces/otlp/queues/jobs")
            )  # a last span for the final flush
    finally:
        code, took = await platform.stop_one("queue")
    lines = platform.logs("queue")
    assert code == 0, lines[-20:]
    assert not [line for line in lines if " ERROR " in line or "Traceback" in line], lines
    warnings = [line for line in lines if "trace export to" in line and " WARNING " in line]
    assert len(warnings) == 1, warnings
    # The SDK exporter alone keeps retrying the last batch for most of its 30 s timeout.
    assert took < 15, f"stopping took {took:.1f}s"


def test_alert_rules_are_valid_and_pass_their_unit_tests() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if services_required():
            pytest.fail("promtool is required in CI (apt-get install prometheus)")
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    for command in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts_test.yml"]):
        result = subprocess.run(
            [promtool, *command],
            cwd=OBSERVABILITY,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr


def services_required() -> bool:
    from tests.helpers.services import services_required as required

    return required()
