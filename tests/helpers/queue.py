"""Running the real queue service for tests: a Platform on a real database, called over gRPC."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from google.protobuf import duration_pb2

from conveyor.common.v1 import types_pb2
from conveyor.queue.v1 import messages_pb2 as m
from conveyor.queue.v1 import service_pb2 as rpc
from conveyor.queue.v1 import service_pb2_grpc
from conveyor_core.clock import ManualClock
from conveyor_core.coordination import Coordination
from conveyor_core.grpc import create_channel
from conveyor_core.runtime import Platform
from conveyor_core.settings import CoreSettings
from tests.helpers.polling import eventually

NAMESPACE = "test"


def queue_name(queue: str = "jobs", namespace: str = NAMESPACE) -> str:
    return f"namespaces/{namespace}/queues/{queue}"


def spec(priority: int = 0, data: bytes = b"", **fields) -> m.WorkOrderSpec:  # type: ignore[no-untyped-def]
    return m.WorkOrderSpec(priority=priority, payload=types_pb2.Payload(data=data), **fields)


def seconds(value: float) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromNanoseconds(int(value * 1e9))
    return out


@dataclass
class QueueEnv:
    """One running queue service (real server, real database) and a client stub."""

    core: CoreSettings
    clock: ManualClock
    coordination: Coordination | None = None
    platform: Platform | None = None
    stub: service_pb2_grpc.WorkOrderQueueServiceStub = field(init=False)

    async def start(self) -> QueueEnv:
        self.platform = Platform(
            self.core, ["queue"], coordination=self.coordination, clock=self.clock
        )
        port = await self.platform.start("127.0.0.1:0")
        self._channel = create_channel(f"127.0.0.1:{port}")
        self.stub = service_pb2_grpc.WorkOrderQueueServiceStub(self._channel)
        return self

    async def stop(self) -> None:
        await self._channel.close()
        if self.platform is not None:
            await self.platform.stop(grace=0)

    @property
    def engine(self):  # type: ignore[no-untyped-def]
        assert self.platform is not None
        return self.platform.service("queue").engine

    async def submit(self, queue: str = "jobs", **spec_fields) -> m.WorkOrder:  # type: ignore[no-untyped-def]
        response = await self.stub.SubmitWorkOrder(
            rpc.SubmitWorkOrderRequest(parent=queue_name(queue), work_order=spec(**spec_fields))
        )
        return response.work_order

    async def submit_many(
        self, specs: Sequence[m.WorkOrderSpec], queue: str = "jobs"
    ) -> list[m.WorkOrder]:
        response = await self.stub.BatchSubmitWorkOrders(
            rpc.BatchSubmitWorkOrdersRequest(
                parent=queue_name(queue),
                requests=[rpc.SubmitWorkOrderRequest(work_order=s) for s in specs],
            )
        )
        return [r.work_order for r in response.responses]

    async def lease(
        self,
        n: int = 1,
        queues: Sequence[str] = ("jobs",),
        wait: float = 0,
        lease: float | None = None,
        worker: str = "worker-1",
    ) -> list[rpc.LeasedWorkOrder]:
        request = rpc.LeaseWorkOrdersRequest(
            parent=f"namespaces/{NAMESPACE}",
            queues=list(queues),
            max_work_orders=n,
            wait_time=seconds(wait),
            worker_identity=worker,
        )
        if lease is not None:
            request.lease_duration.CopyFrom(seconds(lease))
        return list((await self.stub.LeaseWorkOrders(request)).work_orders)

    async def complete(self, leased: rpc.LeasedWorkOrder, data: bytes = b"") -> m.WorkOrder:
        response = await self.stub.CompleteWorkOrder(
            rpc.CompleteWorkOrderRequest(
                name=leased.work_order.name,
                lease_token=leased.lease_token,
                result=types_pb2.Payload(data=data),
            )
        )
        return response.work_order

    async def fail(
        self,
        leased: rpc.LeasedWorkOrder,
        error_type: str = "network",
        retryable: bool = True,
        **fields,
    ) -> m.WorkOrder:  # type: ignore[no-untyped-def]
        response = await self.stub.FailWorkOrder(
            rpc.FailWorkOrderRequest(
                name=leased.work_order.name,
                lease_token=leased.lease_token,
                failure=types_pb2.Failure(type=error_type, message="boom", retryable=retryable),
                **fields,
            )
        )
        return response.work_order

    async def get(self, name: str) -> m.WorkOrder:
        return (await self.stub.GetWorkOrder(rpc.GetWorkOrderRequest(name=name))).work_order

    async def sweep(self) -> int:
        return await self.engine.sweep()


async def parked(env: QueueEnv, count: int, queue: str = "jobs") -> None:
    """Wait until `count` lease calls of `queue` wait parked, with no wake-up pending.

    What a test waits for before the submit (or completion, resume...) that should
    wake them: not a fixed sleep, which a loaded machine outlasts.
    """
    coordination = env.platform.coordination  # type: ignore[union-attr]
    channel = f"queue:{NAMESPACE}/{queue}"

    async def probe() -> bool:
        return bool(coordination.parked(channel) == count)

    await eventually(probe, f"{count} lease calls parked on {channel}", 10)


def wall_clock() -> ManualClock:
    """A manual clock starting at the real time (so rate buckets look like real minutes)."""
    return ManualClock(datetime.now(UTC))
