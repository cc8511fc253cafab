"""Errors of the executor service, each a conveyor_core error by gRPC code."""

from __future__ import annotations

from conveyor_core.errors import FailedPrecondition, NotFound, PreconditionViolation
from conveyor_executor.domain.model import OutputRef, RunRef, RunState


class RunNotFound(NotFound):
    def __init__(self, ref: RunRef) -> None:
        super().__init__("conveyor.executor.v1.Run", ref.name)


class OutputNotFound(NotFound):
    def __init__(self, ref: OutputRef) -> None:
        super().__init__("conveyor.executor.v1.Output", ref.name)


class WorkflowNotFound(NotFound):
    def __init__(self, namespace: str, workflow: str) -> None:
        super().__init__(
            "conveyor.executor.v1.Workflow", f"namespaces/{namespace}/workflows/{workflow}"
        )


class SessionNotFound(NotFound):
    def __init__(self, namespace: str, session_id: str) -> None:
        super().__init__(
            "conveyor.executor.v1.Session", f"namespaces/{namespace}/sessions/{session_id}"
        )


class HandlerRunNotFound(NotFound):
    def __init__(self, namespace: str, handler_run_id: str) -> None:
        super().__init__(
            "conveyor.executor.v1.HandlerRun",
            f"namespaces/{namespace}/handlerRuns/{handler_run_id}",
        )


class RunNotAbortable(FailedPrecondition):
    """The run is not running on this executor, so it cannot be aborted here."""

    reason = "RUN_NOT_ABORTABLE"

    def __init__(self, ref: RunRef, state: RunState, detail: str = "") -> None:
        description = detail or f"cannot abort a run that is {state.value}"
        super().__init__(PreconditionViolation("STATE", ref.name, description))


class PhaseConflict(FailedPrecondition):
    """The handler run is not in a phase this change may come from (someone else moved it)."""

    reason = "HANDLER_RUN_PHASE"

    def __init__(self, name: str, phase: str, wanted: str, revision: int = 0) -> None:
        super().__init__(
            PreconditionViolation(
                "PHASE",
                name,
                f"the run is {phase} (revision {revision}), cannot move it to {wanted}",
            )
        )
        self.phase = phase
