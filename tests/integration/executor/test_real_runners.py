"""The pool with the real runners: a command job and an HTTP job, end to end through the queue."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from conveyor.common.v1 import job_pb2
from conveyor.executor.v1 import messages_pb2 as pb
from conveyor.executor.v1 import service_pb2 as rpc
from conveyor.queue.v1 import messages_pb2 as Q
from conveyor_core.settings import CoreSettings
from tests.helpers.executor import ExecutorEnv, executor_settings, run_name
from tests.helpers.http_fake import HttpFake, Reply
from tests.helpers.metrics import metric_value
from tests.helpers.queue import QueueEnv


@pytest.fixture
async def real(core: CoreSettings, queue: QueueEnv, tmp_path: Path) -> AsyncIterator[ExecutorEnv]:
    settings = executor_settings(workspace_root=tmp_path / "workspaces")
    env = await ExecutorEnv(core, queue, settings).start()
    yield env
    await env.stop()


async def test_a_command_job_runs_and_its_output_is_kept(
    real: ExecutorEnv, metric_reader: InMemoryMetricReader
) -> None:
    before = metric_value(metric_reader, "conveyor.executor.runs", {"outcome": "succeeded"})
    target = job_pb2.JobTarget(command=job_pb2.CommandTarget(argv=["sh", "-c", "echo hello"]))
    order = await real.submit(job_pb2.JobInvocation(target=target))
    await real.wait_order(order, [Q.WORK_ORDER_STATE_SUCCEEDED], within=30)
    run = await real.wait_run(order, [pb.RUN_STATE_SUCCEEDED])
    assert run.kind == pb.RUN_KIND_COMMAND
    steps = (await real.stub.ListRunSteps(rpc.ListRunStepsRequest(parent=run_name(order)))).steps
    iterations = [s for s in steps if s.kind == "iteration"]
    assert iterations and iterations[0].status == "succeeded"
    stdout_ref = iterations[0].attributes["stdout"]
    output = await real.stub.GetOutput(rpc.GetOutputRequest(name=f"{run_name(order)}/{stdout_ref}"))
    assert output.output.data == b"hello\n"
    after = metric_value(metric_reader, "conveyor.executor.runs", {"outcome": "succeeded"})
    assert after - before == 1


async def test_an_http_job_calls_its_endpoint(real: ExecutorEnv) -> None:
    with HttpFake() as fake:
        fake.route("GET", "/ping", Reply(200, body=b"pong"))
        endpoint = job_pb2.HttpEndpoint(name="ping", method="GET", url=fake.url("/ping"))
        target = job_pb2.JobTarget(http=job_pb2.HttpTarget(endpoints=[endpoint]))
        order = await real.submit(job_pb2.JobInvocation(target=target))
        await real.wait_order(order, [Q.WORK_ORDER_STATE_SUCCEEDED], within=30)
        assert len(fake.requests("/ping")) == 1
    steps = (await real.stub.ListRunSteps(rpc.ListRunStepsRequest(parent=run_name(order)))).steps
    assert [(s.kind, s.display_name, s.status) for s in steps] == [
        ("http_call", "ping", "succeeded")
    ]
