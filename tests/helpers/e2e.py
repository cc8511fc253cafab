"""The whole platform for end-to-end tests: the four services as four servers (as in
Kubernetes) or as one embedded process, and a job that calls HTTP endpoints every second."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import grpc
from google.protobuf.duration_pb2 import Duration

from conveyor.common.v1 import job_pb2, types_pb2
from conveyor.executor.v1 import messages_pb2 as executor_pb
from conveyor.executor.v1 import service_pb2 as executor_rpc
from conveyor.executor.v1 import service_pb2_grpc as executor_grpc
from conveyor.scheduler.v1 import messages_pb2 as scheduler_pb
from conveyor.scheduler.v1 import service_pb2 as scheduler_rpc
from conveyor.scheduler.v1 import service_pb2_grpc as scheduler_grpc
from conveyor_core.grpc import create_channel
from conveyor_core.runtime import Platform
from conveyor_core.settings import CoreSettings
from tests.helpers.polling import eventually as eventually  # the suite's one poll loop

NAMESPACE = "e2e"
T = TypeVar("T")

#: Settings (environment) of a platform that shows a few runs within seconds.
FAST_PLATFORM = {
    "CONVEYOR_EXECUTOR_NAMESPACE": NAMESPACE,
    "CONVEYOR_EXECUTOR_QUEUES": '["jobs"]',
    "CONVEYOR_EXECUTOR_LEASE_WAIT_SECONDS": "0.5",
    "CONVEYOR_EXECUTOR_RETRY_INITIAL_INTERVAL_SECONDS": "0.05",
    "CONVEYOR_SCHEDULER_TICK_SECONDS": "0.1",
    "CONVEYOR_SCHEDULER_OUTCOME_POLL_SECONDS": "0.2",
    "CONVEYOR_QUEUE_RELAY_POLL_SECONDS": "0.1",
}


@dataclass
class Deployment:
    """Where the services answer: one address each (the same one when embedded)."""

    scheduler: str
    executor: str
    events: str
    platforms: list[Platform]
    #: How a client reaches them: TLS settings and a bearer token, when secured.
    client: CoreSettings | None = None
    token: str | None = None

    def channel(self, address: str) -> grpc.aio.Channel:
        return create_channel(address, settings=self.client, token=self.token)

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
