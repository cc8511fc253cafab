"""One Platform of the four services per test module and backend (`stubs`), for tests whose
requests only read or are refused, so they can share it: bad input at the edge."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2

from conveyor.common.v1 import job_pb2
from conveyor.events.v1 import service_pb2 as erpc
from conveyor.events.v1 import service_pb2_grpc as egrpc
from conveyor.executor.v1 import service_pb2_grpc as xgrpc
from conveyor.queue.v1 import service_pb2_grpc as qgrpc
from conveyor.scheduler.v1 import messages_pb2 as sm
from conveyor.scheduler.v1 import service_pb2 as srpc
from conveyor.scheduler.v1 import service_pb2_grpc as sgrpc
from conveyor_core.grpc import create_channel
from conveyor_core.runtime import Platform
from conveyor_core.settings import CoreSettings
from tests.helpers import services

NS = "namespaces/test"
#: A job and a topic every test of the module finds.
JOB = f"{NS}/jobs/job"
TOPIC = f"{NS}/topics/t"
SCHEDULE = f"{JOB}/schedules/s"
QUEUE = f"{NS}/queues/jobs"


def http_job() -> sm.Job:
    endpoint = job_pb2.HttpEndpoint(name="e", method="GET", url="http://127.0.0.1:9/")
    return sm.Job(target=job_pb2.JobTarget(http=job_pb2.HttpTarget(endpoints=[endpoint])))


@dataclass
class Stubs:
    queue: qgrpc.WorkOrderQueueServiceStub
    scheduler: sgrpc.SchedulerServiceStub
    events: egrpc.EventStoreServiceStub
    executor: xgrpc.ExecutorServiceStub
    #: host:port of the platform, for blocking clients (Hypothesis runs them in a thread).
    address: str = ""


def stubs_of(channel: grpc.Channel | grpc.aio.Channel, address: str = "") -> Stubs:
    return Stubs(
        qgrpc.WorkOrderQueueServiceStub(channel),
        sgrpc.SchedulerServiceStub(channel),
        egrpc.EventStoreServiceStub(channel),
        xgrpc.ExecutorServiceStub(channel),
        address,
    )


@pytest.fixture(scope="module")
async def edge_postgres_core(
    make_postgres_database: Any,
    platform_template_db: str,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> CoreSettings:
    return CoreSettings(
        database_url=await make_postgres_database(template=platform_template_db),
        redis_url=redis_url,
        redis_key_prefix=f"conveyor-test:{services.RUN_ID}:edge:",
        data_dir=tmp_path_factory.mktemp("platform"),
    )


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def module_core(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> CoreSettings:
    """One backend for the whole module (the cases only read or are refused)."""
    if request.param == "sqlite":
        return CoreSettings(data_dir=tmp_path_factory.mktemp("platform"))
    settings: CoreSettings = request.getfixturevalue("edge_postgres_core")
    return settings


@pytest.fixture(scope="module")
async def stubs(module_core: CoreSettings) -> AsyncIterator[Stubs]:
    platform = Platform(module_core, ["queue", "events", "scheduler", "executor"])
    port = await platform.start("127.0.0.1:0")
    channel = create_channel(f"127.0.0.1:{port}")
    try:
        yield await _prepared(channel, f"127.0.0.1:{port}")
    finally:
        await channel.close()
        await platform.stop(grace=0)


async def _prepared(channel: grpc.aio.Channel, address: str) -> Stubs:
    out = stubs_of(channel, address)
    await out.scheduler.CreateJob(srpc.CreateJobRequest(parent=NS, job_id="job", job=http_job()))
    await out.events.CreateTopic(erpc.CreateTopicRequest(parent=NS, topic_id="t"))
    every = duration_pb2.Duration(seconds=3600)
    await out.scheduler.CreateSchedule(
        srpc.CreateScheduleRequest(
            parent=JOB,
            schedule_id="s",
            schedule=sm.Schedule(interval=sm.IntervalSpec(every=every), paused=True),
        )
    )
    return out
