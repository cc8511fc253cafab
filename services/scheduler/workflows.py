"""Does a deployed app define this workflow target? Asked of the executor's WorkflowService.

Workers register their apps' workflows in the executor's store at start
(docs/workflows.md). A job whose target names a workflow or handler that no
deployed app registered is refused with FAILED_PRECONDITION naming what is
registered. When the executor cannot be asked (no CONVEYOR_EXECUTOR_ADDRESS,
or it does not answer), the job is accepted and a warning is logged: the
executor still refuses an unknown handler at preflight.
"""

from __future__ import annotations

import logging

import grpc

from conveyor.common.v1 import job_pb2
from conveyor.executor.v1 import workflow_pb2 as wf_pb
from conveyor.executor.v1 import workflow_pb2_grpc as wf_grpc
from conveyor_core.errors import FailedPrecondition, PreconditionViolation
from conveyor_core.grpc import create_channel
from conveyor_core.settings import CoreSettings

log = logging.getLogger(__name__)


class WorkflowNotDeployed(FailedPrecondition):
    reason = "WORKFLOW_NOT_DEPLOYED"

    def __init__(self, subject: str, description: str) -> None:
        super().__init__(PreconditionViolation("WORKFLOW", subject, description))


class WorkflowRegistry:
    def __init__(self) -> None:
        self._stub: wf_grpc.WorkflowServiceAsyncStub | None = None
        self._channel: grpc.aio.Channel | None = None
        self._timeout = 5.0

    def attach(self, address: str, core: CoreSettings, timeout: float) -> None:
        self._channel = create_channel(address, settings=core)
        self._stub = wf_grpc.WorkflowServiceStub(self._channel)
        self._timeout = timeout

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()

    async def check(self, namespace: str, target: job_pb2.JobTarget) -> None:
        if not target.HasField("workflow"):
            return
        workflow, handler = target.workflow.workflow, target.workflow.handler
        name = f"namespaces/{namespace}/workflows/{workflow}"
        if self._stub is None:
            log.warning("job target %s: no executor address to check it against", name)
            return
        try:
            found = (
                await self._stub.GetWorkflow(
                    wf_pb.GetWorkflowRequest(name=name), timeout=self._timeout
                )
            ).workflow
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                raise WorkflowNotDeployed(
                    name,
                    f"no deployed app defines workflow {workflow} in namespace {namespace}: "
                    "run the app with `conveyor worker module:app` first (docs/workflows.md)",
                ) from None
            log.warning("job target %s not checked: %s", name, error.code().name)
            return
        handlers = sorted(h.handler for h in found.handlers)
        if handler not in handlers:
            raise WorkflowNotDeployed(
                name,
                f"handler not found: {handler} (workflow {workflow} defines: "
                f"{', '.join(handlers)})",
            )
