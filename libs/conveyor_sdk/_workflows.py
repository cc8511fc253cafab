"""`client.workflows`: trigger handlers, see sessions and blocked runs, resolve mutations.

    async with conveyor.Client() as client:
        await client.workflows.trigger(poll_orders)                  # run a producer now
        for run in await client.workflows.blocked_runs("shop"):      # waiting for a person
            print(run.prompt)
            await client.workflows.resolve(run.name, "applied", reason="seen in the dashboard",
                                           result={"charge_id": "ch_1"})

The records are the WorkflowService messages (conveyor.executor.v1.workflow_pb2), typed.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable
from typing import Any, Literal, TypeVar

import grpc

from conveyor.executor.v1 import workflow_pb2 as wf_pb
from conveyor.executor.v1 import workflow_pb2_grpc as wf_grpc
from conveyor.scheduler.v1 import messages_pb2 as sched_pb
from conveyor.scheduler.v1 import service_pb2 as sched_rpc
from conveyor.scheduler.v1 import service_pb2_grpc as sched_grpc
from conveyor_sdk._errors import error_from_rpc
from conveyor_sdk._workflow import Consumer, Producer, handler_job_id

__all__ = ["Workflows"]
T = TypeVar("T")
_RESOLUTIONS = {
    "applied": wf_pb.RESOLUTION_APPLIED,
    "failed": wf_pb.RESOLUTION_FAILED,
    "skip": wf_pb.RESOLUTION_SKIP,
}


async def _call(awaitable: Awaitable[T]) -> T:
    try:
        return await awaitable
    except grpc.aio.AioRpcError as error:
        raise error_from_rpc(error) from None


class Workflows:
    def __init__(self, channel: grpc.aio.Channel, namespace: str) -> None:
        self._stub = wf_grpc.WorkflowServiceStub(channel)
        self._scheduler = sched_grpc.SchedulerServiceStub(channel)
        self.namespace = namespace

    def _workflow(self, workflow: str) -> str:
        return f"namespaces/{self.namespace}/workflows/{workflow}"

    async def trigger(self, handler: Producer | Consumer | str | Any) -> sched_pb.Fire:
        """Fire a handler's schedule now: a producer function or consumer class registered
        with `@wf.producer` / `@wf.consumer`, or its name "workflow.handler"."""
        handler = getattr(handler, "__conveyor_handler__", handler)
        if isinstance(handler, str):
            workflow, _, name = handler.partition(".")
            if not name:
                raise ValueError("trigger() takes a handler or 'workflow.handler'")
            namespace = self.namespace
        elif not isinstance(handler, Producer | Consumer):
            raise TypeError(f"trigger() takes a workflow handler, not {type(handler).__name__}")
        else:
            workflow, name, namespace = (
                handler.workflow.name,
                handler.name,
                handler.workflow.app.namespace,
            )
        ident = handler_job_id(workflow, name)
        schedule = f"namespaces/{namespace}/jobs/{ident}/schedules/{ident}"
        reply = await _call(
            self._scheduler.TriggerSchedule(sched_rpc.TriggerScheduleRequest(name=schedule))
        )
        return reply.fire

    async def get(self, workflow: str) -> wf_pb.Workflow:
        reply = await _call(
            self._stub.GetWorkflow(wf_pb.GetWorkflowRequest(name=self._workflow(workflow)))
        )
        return reply.workflow

    async def pause(self, workflow: str, reason: str = "", by: str = "") -> wf_pb.Workflow:
        reply = await _call(
            self._stub.PauseWorkflow(
                wf_pb.PauseWorkflowRequest(
                    name=self._workflow(workflow), reason=reason, paused_by=by
                )
            )
        )
        return reply.workflow

    async def resume(self, workflow: str) -> wf_pb.Workflow:
        reply = await _call(
            self._stub.ResumeWorkflow(wf_pb.ResumeWorkflowRequest(name=self._workflow(workflow)))
        )
        return reply.workflow

    async def sessions(self, workflow: str, limit: int = 50) -> list[wf_pb.Session]:
        reply = await _call(
            self._stub.ListSessions(
                wf_pb.ListSessionsRequest(parent=self._workflow(workflow), page_size=limit)
            )
        )
        return list(reply.sessions)

    async def blocked_runs(self, workflow: str = "", limit: int = 100) -> list[wf_pb.HandlerRun]:
        """Handler runs suspended on a person (each with its prompt), newest first."""
        reply = await _call(
            self._stub.ListHandlerRuns(
                wf_pb.ListHandlerRunsRequest(
                    parent=f"namespaces/{self.namespace}",
                    workflow=workflow,
                    phases=[wf_pb.HANDLER_PHASE_SUSPENDED],
                    page_size=limit,
                )
            )
        )
        return list(reply.handler_runs)

    async def resolve(
        self,
        handler_run: str,
        resolution: Literal["applied", "failed", "skip"],
        *,
        reason: str,
        result: Any = None,
        by: str = "",
    ) -> wf_pb.ResolveMutationResponse:
        """Settle a suspended run's indeterminate mutation (operator role): "applied" (with
        the call's `result`, JSON), "failed" (mutate runs again) or "skip"."""
        if resolution not in _RESOLUTIONS:
            raise ValueError(f"resolution must be applied, failed or skip, not {resolution!r}")
        return await _call(
            self._stub.ResolveMutation(
                wf_pb.ResolveMutationRequest(
                    name=handler_run,
                    resolution=_RESOLUTIONS[resolution],
                    result_json="" if result is None else json.dumps(result),
                    reason=reason,
                    resolved_by=by,
                )
            )
        )
