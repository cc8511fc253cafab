"""A platform hosting tests.helpers.workflow_app, with the fake shop, on both backends."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conveyor.executor.v1 import workflow_pb2 as wf_pb
from conveyor.executor.v1 import workflow_pb2_grpc as wf_grpc
from conveyor.scheduler.v1 import service_pb2 as sched_rpc
from conveyor.scheduler.v1 import service_pb2_grpc as sched_grpc
from conveyor_core.fake_shop import FakeShop
from conveyor_core.grpc import create_channel
from conveyor_core.runtime import Platform
from conveyor_core.settings import CoreSettings
from conveyor_executor.workflow.registration import job_id
from tests.helpers import workflow_app
from tests.helpers.e2e import eventually

#: Registering the test app creates a job and schedules for each handler of its
#: workflows (tens of scheduler calls at the executor's start): on a 2-core machine
#: loaded by other suites that took over 30 s.
REGISTRATION_LIMIT = 120.0

EXECUTOR_ENV = {
    "LEASE_WAIT_SECONDS": "0.2",
    "HEARTBEAT_INTERVAL_SECONDS": "0.2",
    "ABORT_GRACE_SECONDS": "2",
}


@pytest.fixture
def fake_shop(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeShop]:
    shop = FakeShop().start()
    monkeypatch.setenv("CONVEYOR_EXAMPLE_SHOP_URL", shop.url)
    yield shop
    shop.stop()


@dataclass
class Env:
    address: str
    workflows: wf_grpc.WorkflowServiceStub
    scheduler: sched_grpc.SchedulerServiceStub
    shop: FakeShop

    async def trigger(self, workflow: str, handler: str) -> None:
        ident = job_id(workflow, handler)
        name = f"namespaces/wf/jobs/{ident}/schedules/{ident}"
        await eventually(
            lambda: self._schedule_exists(name), f"schedule {name}", REGISTRATION_LIMIT
        )
        await self.scheduler.TriggerSchedule(sched_rpc.TriggerScheduleRequest(name=name))

    async def _schedule_exists(self, name: str) -> bool:
        try:
            await self.scheduler.GetSchedule(sched_rpc.GetScheduleRequest(name=name))
        except Exception:
            return False
        return True

    async def registered(self, workflow: str) -> None:
        async def found() -> bool:
            try:
                await self.workflows.GetWorkflow(
                    wf_pb.GetWorkflowRequest(name=f"namespaces/wf/workflows/{workflow}")
                )
            except Exception:
                return False
            return True

        await eventually(found, f"workflow {workflow} registered", REGISTRATION_LIMIT)

    async def runs(self, workflow: str, *phases: int) -> list[wf_pb.HandlerRun]:
        reply = await self.workflows.ListHandlerRuns(
            wf_pb.ListHandlerRunsRequest(
                parent="namespaces/wf", workflow=workflow, phases=list(phases), page_size=1000
            )
        )
        return list(reply.handler_runs)

    async def sessions(self, workflow: str) -> list[wf_pb.Session]:
        reply = await self.workflows.ListSessions(
            wf_pb.ListSessionsRequest(parent=f"namespaces/wf/workflows/{workflow}", page_size=100)
        )
        return list(reply.sessions)


@pytest.fixture
async def env(
    core: CoreSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_shop: FakeShop
) -> AsyncIterator[Env]:
    monkeypatch.setenv("CONVEYOR_EXECUTOR_WORKSPACE_ROOT", str(tmp_path / "ws"))
    for name, value in EXECUTOR_ENV.items():
        monkeypatch.setenv(f"CONVEYOR_EXECUTOR_{name}", value)
    hosting = {"apps": [workflow_app.app], "only_app_queues": True}
    platform = Platform(core, ["queue", "events", "scheduler", "executor"], hosting=hosting)
    port = await platform.start("127.0.0.1:0")
    address = f"127.0.0.1:{port}"
    async with create_channel(address) as channel:
        yield Env(
            address,
            wf_grpc.WorkflowServiceStub(channel),
            sched_grpc.SchedulerServiceStub(channel),
            fake_shop,
        )
    await platform.stop(grace=1)
