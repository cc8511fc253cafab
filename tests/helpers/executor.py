"""Running the real executor for tests: its own gRPC server, leasing from a real queue.

`ExecutorEnv` hosts an ExecutorService the way a separate executor process
does (its own server, `attach_peers` pointing at the queue's address), next
to a `QueueEnv`. `ScriptedRunner` is a test-only runner injected through the
executor's runner registry (keyed by target kind): its command argv says
what the attempt does, so pool behaviour (concurrency, abort, drain, progress)
is exercised without processes or endpoints.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conveyor.common.v1 import job_pb2, types_pb2
from conveyor.executor.v1 import messages_pb2 as pb
from conveyor.executor.v1 import service_pb2 as rpc
from conveyor.executor.v1 import service_pb2_grpc
from conveyor.queue.v1 import messages_pb2 as queue_pb
from conveyor.queue.v1 import service_pb2 as queue_rpc
from conveyor_core.clock import SystemClock
from conveyor_core.coordination import Coordination
from conveyor_core.grpc import GrpcServer, create_channel, create_server
from conveyor_core.runtime import coordination_from
from conveyor_core.settings import CoreSettings
from conveyor_executor.api.servicer import SERVICE_NAME
from conveyor_executor.attempt import Runner
from conveyor_executor.domain.failure import ClassifiedError, ErrorType
from conveyor_executor.domain.invocation import JOB_INVOCATION_CONTENT_TYPE
from conveyor_executor.runners.context import (
    RunContext,
    RunnerOutcome,
    Step,
    StepKind,
    StepStatus,
)
from conveyor_executor.service import ExecutorService
from conveyor_executor.settings import ExecutorSettings
from tests.helpers.polling import poll as poll  # the suite's one poll loop
from tests.helpers.queue import NAMESPACE, QueueEnv

#: Settings that make the pool quick to react in tests.
FAST = {
    "namespace": NAMESPACE,
    "queues": ("jobs",),
    "lease_wait_seconds": 0.2,
    "lease_seconds": 5.0,
    "heartbeat_interval_seconds": 0.05,
    "drain_timeout_seconds": 5.0,
    "abort_grace_seconds": 2.0,
    "queue_call_timeout_seconds": 5.0,
    "lease_error_backoff_seconds": 0.05,
    "worker_identity": "executor-test",
    "relay_poll_seconds": 0.05,
}


def executor_settings(**overrides: Any) -> ExecutorSettings:
    return ExecutorSettings(**{**FAST, **overrides})


def command_invocation(*argv: str, **fields: Any) -> job_pb2.JobInvocation:
    target = job_pb2.JobTarget(command=job_pb2.CommandTarget(argv=list(argv)))
    return job_pb2.JobInvocation(target=target, **fields)


def invocation_payload(invocation: job_pb2.JobInvocation) -> types_pb2.Payload:
    return types_pb2.Payload(
        data=invocation.SerializeToString(), content_type=JOB_INVOCATION_CONTENT_TYPE
    )


class ScriptedRunner:
    """A runner whose behaviour is the job's argv[0]:

    * `ok [work_found]`: succeeds, with 10/5 tokens and $0.01;
    * `fail <type> <retryable>`: fails with that classified error;
    * `block`: reports progress 50%, records a step, then waits for the abort;
    * `stubborn`: reports progress, then ignores the abort (sleeps until cancelled);
    * `gate`: waits until the test opens `gate` (concurrency counting);
    * `record`: after the gate, reports progress, records a step, saves an output, succeeds;
    * `crash`: raises.
    """

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.running = 0
        self.max_running = 0
        self.started: list[str] = []
        self.cancelled_tasks = 0

    async def __call__(self, invocation: job_pb2.JobInvocation, ctx: RunContext) -> RunnerOutcome:
        argv = list(invocation.target.command.argv) or ["ok"]
        self.started.append(ctx.run_id)
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            return await self._act(argv, ctx)
        except asyncio.CancelledError:
            self.cancelled_tasks += 1
            raise
        finally:
            self.running -= 1

    async def _act(self, argv: list[str], ctx: RunContext) -> RunnerOutcome:
        verb = argv[0]
        if verb == "ok":
            found = len(argv) < 2 or argv[1] != "false"
            return RunnerOutcome(True, found, "all good", None, 10, 5, 0.01)
        if verb == "fail":
            error = ClassifiedError(ErrorType(argv[1]), f"scripted {argv[1]}", argv[2] == "true")
            return RunnerOutcome(False, False, error.message, error)
        if verb == "crash":
            raise RuntimeError("scripted crash")
        if verb == "gate":
            await self.gate.wait()
            return RunnerOutcome(True, True, "gate opened")
        if verb == "record":
            await self.gate.wait()
            await ctx.report_progress(75, "three quarters")
            now = SystemClock().now()
            await ctx.record_step(Step(StepKind.CHECK, "lint", StepStatus.SUCCEEDED, now, now))
            reference = await ctx.save_output("stdout", b"hello", truncated=False)
            return RunnerOutcome(True, True, f"recorded {reference or 'nothing'}")
        await ctx.report_progress(50, "halfway")
        now = SystemClock().now()
        await ctx.record_step(
            Step(StepKind.ITERATION, "iteration 1", StepStatus.INFO, now, now, {"index": 1})
        )
        if verb == "stubborn":
            await asyncio.Event().wait()
        await ctx.cancelled.wait()
        error = ClassifiedError.of(ErrorType.ABORTED, "stopped on request")
        return RunnerOutcome(False, False, "aborted", error)


@dataclass
class ExecutorEnv:
    """One executor service on its own server, leasing from `queue`."""

    core: CoreSettings
    queue: QueueEnv
    settings: ExecutorSettings = field(default_factory=executor_settings)
    runners: Mapping[str, Runner] | None = None
    environ: Mapping[str, str] = field(default_factory=dict)
    attach_queue: bool = True
    #: Attach this queue address instead of the queue's (e.g. one where nothing listens).
    queue_address_override: str = ""
    coordination: Coordination | None = None
    service: ExecutorService = field(init=False)
    server: GrpcServer = field(init=False)

    async def start(self) -> ExecutorEnv:
        self.coordination = self.coordination or coordination_from(self.core)
        await self.coordination.start()
        self.service = ExecutorService(
            self.core,
            self.coordination,
            self.settings,
            runners=self.runners,
            environ=self.environ,
        )
        await self.service.start()
        self.server, port = await create_server(
            "127.0.0.1:0", self.service.registrations(), self.core
        )
        await self.server.start()
        self.address = f"127.0.0.1:{port}"
        self._channel = create_channel(self.address)
        self.stub = service_pb2_grpc.ExecutorServiceStub(self._channel)
        self.health = health_pb2_grpc.HealthStub(self._channel)
        if self.attach_queue:
            await self.service.attach_peers({"queue": self.queue_address})
        elif self.queue_address_override:
            self.service.queue = self.service._queue_client(self.queue_address_override)
        await self.service.self_check()
        await self.server.set_serving(SERVICE_NAME, True)
        return self

    @property
    def queue_address(self) -> str:
        assert self.queue.platform is not None
        return f"127.0.0.1:{self.queue.platform.port}"

    async def stop(self) -> None:
        await self._channel.close()
        await self.server.stop(0)
        await self.service.stop()
        assert self.coordination is not None
        await self.coordination.stop()

    async def readiness(self) -> int:
        response = await self.health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
        return response.status

    async def submit(
        self, invocation: job_pb2.JobInvocation | None = None, **spec: Any
    ) -> queue_pb.WorkOrder:
        payload = spec.pop("payload", None)
        if payload is None:
            payload = invocation_payload(invocation or command_invocation("ok"))
        request_spec = queue_pb.WorkOrderSpec(payload=payload, **spec)
        response = await self.queue.stub.SubmitWorkOrder(
            queue_rpc.SubmitWorkOrderRequest(
                parent=f"namespaces/{NAMESPACE}/queues/jobs", work_order=request_spec
            )
        )
        return response.work_order

    async def get_run(self, order: queue_pb.WorkOrder | str) -> pb.Run:
        name = order if isinstance(order, str) else run_name(order)
        return (await self.stub.GetRun(rpc.GetRunRequest(name=name))).run

    async def wait_order(
        self, order: queue_pb.WorkOrder, states: Sequence[int], within: float = 15.0
    ) -> queue_pb.WorkOrder:
        """Poll the queue until the order is in one of `states`."""
        return await poll(lambda: self.queue.get(order.name), lambda o: o.state in states, within)

    async def wait_run(
        self, order: queue_pb.WorkOrder, states: Sequence[int], within: float = 15.0
    ) -> pb.Run:
        async def get() -> pb.Run | None:
            try:
                return await self.get_run(order)
            except grpc.aio.AioRpcError as error:
                if error.code() is grpc.StatusCode.NOT_FOUND:
                    return None
                raise

        return await poll(get, lambda r: r is not None and r.state in states, within)

    async def watch(self, order: queue_pb.WorkOrder) -> AsyncIterator[pb.RunUpdate]:
        async for response in self.stub.WatchRun(rpc.WatchRunRequest(name=run_name(order))):
            yield response.update


def run_name(order: queue_pb.WorkOrder) -> str:
    return f"namespaces/{order.namespace}/runs/{order.id}"
