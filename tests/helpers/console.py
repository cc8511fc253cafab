"""A platform with the web console, for the console's API and browser tests.

`start_console_platform` hosts the four services, tests.helpers.workflow_app (namespace
"wf", on the fake shop) and the console on a free port, optionally with authentication
on; `ConsolePlatform` holds its addresses, the tokens it admits and helpers that make
what the pages show (a queued order, a dead letter, a pending event).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

import conveyor
from conveyor.common.v1 import types_pb2 as common
from conveyor.events.v1 import messages_pb2 as em
from conveyor.events.v1 import service_pb2 as ev
from conveyor.events.v1 import service_pb2_grpc as ev_grpc
from conveyor.queue.v1 import messages_pb2 as qm
from conveyor.queue.v1 import service_pb2 as q
from conveyor.queue.v1 import service_pb2_grpc as q_grpc
from conveyor.scheduler.v1 import service_pb2 as sched_rpc
from conveyor.scheduler.v1 import service_pb2_grpc as sched_grpc
from conveyor_core.runtime import Platform
from conveyor_core.settings import CoreSettings
from conveyor_executor.workflow.registration import job_id
from conveyor_sdk._channel import open_channel
from tests.helpers import workflow_app
from tests.helpers.e2e import eventually
from tests.helpers.security import Principals

#: Tasks in the workflows' namespace (one executor hosts one namespace): `stepped` reports
#: progress in steps, each after the test opens the step's gate.
tasks = conveyor.App("wf", queue="console-tasks")
GATES: dict[str, list[threading.Event]] = {}


@tasks.task(retry=conveyor.Retry(max_attempts=1))
def stepped(ctx: conveyor.TaskContext, key: str) -> str:
    gates = GATES.setdefault(key, [threading.Event(), threading.Event()])
    for percent, gate in zip((10, 70), gates, strict=True):
        ctx.progress(percent, f"step at {percent}%")
        while not gate.wait(0.02):
            ctx.raise_if_cancelled()
    return "done"


EXECUTOR_ENV = {
    "LEASE_WAIT_SECONDS": "0.2",
    "HEARTBEAT_INTERVAL_SECONDS": "0.2",
    "ABORT_GRACE_SECONDS": "2",
}
NS = "wf"


@dataclass
class ConsolePlatform:
    platform: Platform
    address: str
    url: str
    tokens: dict[str, str] = field(default_factory=dict)
    shop: Any = None

    def headers(self, who: str | None = "operator") -> dict[str, str]:
        token = self.tokens.get(who or "")
        return {"authorization": f"Bearer {token}"} if token else {}

    def _channel(self) -> Any:
        return open_channel(self.address, token=self.tokens.get("operator"))

    async def submit(
        self, queue: str, payload: dict[str, Any], max_attempts: int = 0
    ) -> qm.WorkOrder:
        spec = qm.WorkOrderSpec(
            priority=5,
            payload=common.Payload(
                data=json.dumps(payload).encode(), content_type="application/json"
            ),
        )
        if max_attempts:
            spec.retry_policy.maximum_attempts = max_attempts
        async with self._channel() as channel:
            reply = await q_grpc.WorkOrderQueueServiceStub(channel).SubmitWorkOrder(
                q.SubmitWorkOrderRequest(parent=f"namespaces/{NS}/queues/{queue}", work_order=spec)
            )
        return reply.work_order

    async def dead_letter(self, queue: str, error_type: str = "bad_input") -> qm.WorkOrder:
        """An order whose only attempt failed: attempts exhausted, DEAD."""
        order = await self.submit(queue, {"dead": True}, max_attempts=1)
        async with self._channel() as channel:
            stub = q_grpc.WorkOrderQueueServiceStub(channel)
            leased = await stub.LeaseWorkOrders(
                q.LeaseWorkOrdersRequest(
                    parent=f"namespaces/{NS}",
                    queues=[queue],
                    max_work_orders=100,  # ours among any others queued there
                    worker_identity="test",
                )
            )
            (item,) = [w for w in leased.work_orders if w.work_order.name == order.name]
            failed = await stub.FailWorkOrder(
                q.FailWorkOrderRequest(
                    name=order.name,
                    lease_token=item.lease_token,
                    failure=common.Failure(type=error_type, message="cannot parse", retryable=True),
                )
            )
        assert failed.work_order.state == qm.WORK_ORDER_STATE_DEAD
        return failed.work_order

    async def publish(self, topic: str, title: str) -> Any:
        parent = f"namespaces/{NS}/topics/{topic}"
        async with self._channel() as channel:
            stub = ev_grpc.EventStoreServiceStub(channel)
            try:
                await stub.CreateTopic(
                    ev.CreateTopicRequest(parent=f"namespaces/{NS}", topic_id=topic)
                )
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.ALREADY_EXISTS:
                    raise
            reply = await stub.PublishEvents(
                ev.PublishEventsRequest(
                    parent=parent,
                    events=[em.EventDraft(message_id=title, title=title)],
                )
            )
        return reply.events[0]

    async def create_schedule(self, job_id: str, job: Any, schedule: Any) -> None:
        """A job and its schedule "every"."""
        async with self._channel() as channel:
            stub = sched_grpc.SchedulerServiceStub(channel)
            await stub.CreateJob(
                sched_rpc.CreateJobRequest(parent=f"namespaces/{NS}", job_id=job_id, job=job)
            )
            await stub.CreateSchedule(
                sched_rpc.CreateScheduleRequest(
                    parent=f"namespaces/{NS}/jobs/{job_id}", schedule_id="every", schedule=schedule
                )
            )

    async def trigger(self, workflow: str, handler: str) -> None:
        ident = job_id(workflow, handler)
        name = f"namespaces/{NS}/jobs/{ident}/schedules/{ident}"
        async with self._channel() as channel:
            stub = sched_grpc.SchedulerServiceStub(channel)

            async def exists() -> bool:
                try:
                    await stub.GetSchedule(sched_rpc.GetScheduleRequest(name=name))
                except Exception:
                    return False
                return True

            await eventually(exists, f"schedule {name} registered", 30)
            await stub.TriggerSchedule(sched_rpc.TriggerScheduleRequest(name=name))


async def start_console_platform(
    core: CoreSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, auth: bool
) -> ConsolePlatform:
    monkeypatch.setenv("CONVEYOR_EXECUTOR_WORKSPACE_ROOT", str(tmp_path / "ws"))
    for name, value in EXECUTOR_ENV.items():
        monkeypatch.setenv(f"CONVEYOR_EXECUTOR_{name}", value)
    monkeypatch.setenv("CONVEYOR_CONSOLE_LISTEN_ADDRESS", "127.0.0.1:0")
    monkeypatch.setenv("CONVEYOR_CONSOLE_DEFAULT_NAMESPACE", NS)
    monkeypatch.setenv("CONVEYOR_CONSOLE_REFRESH_SECONDS", "0.5")
    tokens: dict[str, str] = {}
    if auth:
        principals = Principals(tmp_path / "principals.json")
        tokens["operator"] = principals.add(
            "oncall", [NS], ["operator", "submitter", "worker", "viewer"]
        )
        tokens["viewer"] = principals.add("auditor", [NS], ["viewer"])
        tokens["foreign"] = principals.add("other-team", ["other"], ["admin"])
        core = core.model_copy(update={"auth_tokens_file": str(principals.path)})
    hosting = {"apps": [workflow_app.app, tasks], "only_app_queues": True}
    platform = Platform(
        core, ["queue", "events", "scheduler", "executor", "console"], hosting=hosting
    )
    port = await platform.start("127.0.0.1:0")
    return ConsolePlatform(platform, f"127.0.0.1:{port}", platform.service("console").url, tokens)
