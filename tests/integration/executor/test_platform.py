"""The executor hosted with the queue in one Platform (the embedded default)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.common.v1 import job_pb2
from conveyor.executor.v1 import messages_pb2 as pb
from conveyor.executor.v1 import service_pb2 as rpc
from conveyor.executor.v1 import service_pb2_grpc
from conveyor.queue.v1 import messages_pb2 as Q
from conveyor.queue.v1 import service_pb2 as queue_rpc
from conveyor.queue.v1 import service_pb2_grpc as queue_grpc
from conveyor_core.grpc import create_channel
from conveyor_core.runtime import Platform
from conveyor_core.settings import CoreSettings
from tests.helpers.executor import invocation_payload, poll


async def test_stopping_the_platform_drains_runs_while_its_queue_still_answers(
    core: CoreSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {
        "NAMESPACE": "test",
        "WORKSPACE_ROOT": str(tmp_path / "ws"),
        "LEASE_WAIT_SECONDS": "0.2",
        "HEARTBEAT_INTERVAL_SECONDS": "0.1",
    }.items():
        monkeypatch.setenv(f"CONVEYOR_EXECUTOR_{name}", value)
    platform = Platform(core, ["queue", "executor"])
    port = await platform.start("127.0.0.1:0")
    async with create_channel(f"127.0.0.1:{port}") as channel:
        queue = queue_grpc.WorkOrderQueueServiceStub(channel)
        executor = service_pb2_grpc.ExecutorServiceStub(channel)
        # The job's own work takes a moment (not the test waiting for something).
        target = job_pb2.JobTarget(
            command=job_pb2.CommandTarget(argv=["sh", "-c", "sleep 0.5; echo done"])
        )
        submitted = await queue.SubmitWorkOrder(
            queue_rpc.SubmitWorkOrderRequest(
                parent="namespaces/test/queues/jobs",
                work_order=Q.WorkOrderSpec(
                    payload=invocation_payload(job_pb2.JobInvocation(target=target))
                ),
            )
        )
        order = submitted.work_order
        name = f"namespaces/test/runs/{order.id}"

        async def run_state() -> int:
            try:
                return (await executor.GetRun(rpc.GetRunRequest(name=name))).run.state
            except Exception:
                return pb.RUN_STATE_UNSPECIFIED

        await poll(run_state, lambda state: state == pb.RUN_STATE_RUNNING)
    await platform.stop()

    again = Platform(core, ["queue"])
    port = await again.start("127.0.0.1:0")
    try:
        async with create_channel(f"127.0.0.1:{port}") as channel:
            stub = queue_grpc.WorkOrderQueueServiceStub(channel)
            done = await stub.GetWorkOrder(queue_rpc.GetWorkOrderRequest(name=order.name))
        assert done.work_order.state == Q.WORK_ORDER_STATE_SUCCEEDED
    finally:
        await again.stop()
