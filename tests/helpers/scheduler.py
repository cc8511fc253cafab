"""Running the real scheduler (with the queue and event store) for tests, called over gRPC."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf import duration_pb2, timestamp_pb2

from conveyor.common.v1 import job_pb2, types_pb2
from conveyor.events.v1 import messages_pb2 as em
from conveyor.events.v1 import service_pb2_grpc as egrpc
from conveyor.queue.v1 import messages_pb2 as qm
from conveyor.queue.v1 import service_pb2 as qrpc
from conveyor.queue.v1 import service_pb2_grpc as qgrpc
from conveyor.scheduler.v1 import messages_pb2 as pb
from conveyor.scheduler.v1 import service_pb2 as rpc
from conveyor.scheduler.v1 import service_pb2_grpc
from conveyor_core.clock import ManualClock
from conveyor_core.coordination import Coordination
from conveyor_core.grpc import create_channel
from conveyor_core.runtime import Platform
from conveyor_core.settings import CoreSettings
from tests.helpers.journal import read_journal

NAMESPACE = "test"
JOB_RESULT_TYPE = "application/x-protobuf; messageType=conveyor.common.v1.JobResult"


def seconds(value: float) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromTimedelta(timedelta(seconds=value))
    return out


def timestamp(instant: datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(instant)
    return out


def http_job(endpoints: int = 1, **fields: Any) -> pb.Job:
    target = job_pb2.JobTarget(
        http=job_pb2.HttpTarget(
            endpoints=[
                job_pb2.HttpEndpoint(name=f"e{i}", method="GET", url=f"http://127.0.0.1:9/{i}")
                for i in range(endpoints)
            ]
        )
    )
    return pb.Job(target=target, **fields)


def interval(every: float, **fields: Any) -> pb.Schedule:
    return pb.Schedule(interval=pb.IntervalSpec(every=seconds(every)), **fields)


def cron(expression: str, time_zone: str = "UTC", **fields: Any) -> pb.Schedule:
    return pb.Schedule(cron=pb.CronSpec(expression=expression, time_zone=time_zone), **fields)


def job_result(work_found: bool) -> bytes:
    return job_pb2.JobResult(work_found=work_found).SerializeToString()


@dataclass
class SchedulerEnv:
    """Queue + events + scheduler in one Platform (real server, real database)."""

    core: CoreSettings
    clock: ManualClock = field(
        default_factory=lambda: ManualClock(datetime(2030, 1, 1, tzinfo=UTC))
    )
    coordination: Coordination | None = None
    names: tuple[str, ...] = ("queue", "events", "scheduler")
    platform: Platform | None = None

    async def start(self) -> SchedulerEnv:
        self.platform = Platform(
            self.core, list(self.names), coordination=self.coordination, clock=self.clock
        )
        self.port = await self.platform.start("127.0.0.1:0")
        self._channel = create_channel(f"127.0.0.1:{self.port}")
        self.stub = service_pb2_grpc.SchedulerServiceStub(self._channel)
        self.queue = qgrpc.WorkOrderQueueServiceStub(self._channel)
        return self

    async def stop(self) -> None:
        await self._channel.close()
        if self.platform is not None:
            await self.platform.stop(grace=0)
            self.platform = None

    @property
    def service(self) -> Any:
        assert self.platform is not None
        return self.platform.service("scheduler")

    async def create_job(self, job_id: str = "job", job: pb.Job | None = None) -> pb.Job:
        response = await self.stub.CreateJob(
            rpc.CreateJobRequest(
                parent=f"namespaces/{NAMESPACE}", job_id=job_id, job=job or http_job()
            )
        )
        return response.job

    async def create_schedule(
        self, schedule: pb.Schedule, schedule_id: str = "every", job_id: str = "job"
    ) -> pb.Schedule:
        response = await self.stub.CreateSchedule(
            rpc.CreateScheduleRequest(
                parent=f"namespaces/{NAMESPACE}/jobs/{job_id}",
                schedule_id=schedule_id,
                schedule=schedule,
            )
        )
        return response.schedule

    async def fires(self, schedule: str) -> list[pb.Fire]:
        response = await self.stub.ListFires(rpc.ListFiresRequest(parent=schedule, page_size=1000))
        return list(response.fires)

    async def journal_records(self, **filter_fields: str) -> list[em.JournalRecord]:
        """The journal hosted in this env's process, every matching record."""
        return await read_journal(egrpc.JournalServiceStub(self._channel), **filter_fields)

    async def orders(self, queue: str = "jobs") -> list[qm.WorkOrder]:
        response = await self.queue.ListWorkOrders(
            qrpc.ListWorkOrdersRequest(
                parent=f"namespaces/{NAMESPACE}/queues/{queue}", page_size=1000
            )
        )
        return list(response.work_orders)

    async def lease(self, n: int = 10) -> list[qrpc.LeasedWorkOrder]:
        response = await self.queue.LeaseWorkOrders(
            qrpc.LeaseWorkOrdersRequest(
                parent=f"namespaces/{NAMESPACE}",
                queues=["jobs"],
                max_work_orders=n,
                worker_identity="test-worker",
            )
        )
        return list(response.work_orders)

    async def complete(self, leased: qrpc.LeasedWorkOrder, work_found: bool) -> None:
        await self.queue.CompleteWorkOrder(
            qrpc.CompleteWorkOrderRequest(
                name=leased.work_order.name,
                lease_token=leased.lease_token,
                result=types_pb2.Payload(data=job_result(work_found), content_type=JOB_RESULT_TYPE),
            )
        )


@dataclass
class SchedulerCluster:
    """A queue + event store host and several scheduler replicas on one database and Redis.

    On the embedded backend the replicas share one in-process coordination (as
    replicas share Redis); on PostgreSQL each has its own Redis connection.
    """

    core: CoreSettings
    replicas: int = 2
    clock: ManualClock = field(
        default_factory=lambda: ManualClock(datetime(2030, 1, 1, tzinfo=UTC))
    )

    async def start(self) -> SchedulerCluster:
        from conveyor_core.coordination import InProcessCoordination

        shared = None if self.core.redis_url else InProcessCoordination()
        self.host = await SchedulerEnv(
            self.core, self.clock, shared, names=("queue", "events")
        ).start()
        address = f"127.0.0.1:{self.host.port}"
        replica_core = self.core.model_copy(
            update={"queue_address": address, "events_address": address, "journal_address": address}
        )
        self.nodes: list[SchedulerEnv] = []
        for _ in range(self.replicas):
            node = await SchedulerEnv(
                replica_core, self.clock, shared, names=("scheduler",)
            ).start()
            self.nodes.append(node)
        return self

    async def stop(self) -> None:
        for node in self.nodes:
            await node.stop()
        await self.host.stop()

    def leaders(self) -> list[SchedulerEnv]:
        return [n for n in self.nodes if n.platform and n.service.election.is_leader]

    async def crash(self, node: SchedulerEnv) -> None:
        """Stop a replica's election and leader tasks without releasing its lease (a crash)."""
        election = node.service.election
        task, election._task = election._task, None
        if task is not None:
            task.cancel()
        election.lease = None
        await node.service._on_deposed()
