"""Errors of the work-order-queue service, each a conveyor_core error by gRPC code."""

from __future__ import annotations

from conveyor_core.errors import (
    DatabaseUnavailable,
    FailedPrecondition,
    NotFound,
    PreconditionViolation,
)
from conveyor_queue.domain.model import WorkOrderRef, WorkOrderState


class WorkOrderNotFound(NotFound):
    def __init__(self, ref: WorkOrderRef) -> None:
        super().__init__("conveyor.queue.v1.WorkOrder", ref.name)


class StaleLease(FailedPrecondition):
    """The lease token is not the order's current lease (it expired or was re-leased)."""

    reason = "STALE_LEASE"

    def __init__(self, ref: WorkOrderRef, state: WorkOrderState | None = None) -> None:
        detail = "lease token is stale: the lease expired or the order was leased again"
        if state is not None and state is not WorkOrderState.LEASED:
            detail += f" (order is {state.value})"
        super().__init__(PreconditionViolation("LEASE", ref.name, detail))


class InvalidState(FailedPrecondition):
    """The order is not in a state that allows this operation."""

    reason = "INVALID_STATE"

    def __init__(self, ref: WorkOrderRef, state: WorkOrderState, operation: str) -> None:
        super().__init__(
            PreconditionViolation(
                "STATE", ref.name, f"cannot {operation} an order that is {state.value}"
            )
        )


class WorkOrderQuarantined(FailedPrecondition):
    """The order's stored row cannot be processed: it was failed (failure type `poisoned`)."""

    reason = "WORK_ORDER_QUARANTINED"

    def __init__(self, ref: WorkOrderRef, cause: str) -> None:
        super().__init__(
            PreconditionViolation(
                "STATE", ref.name, f"the order was quarantined and failed: {cause}"
            )
        )


__all__ = [
    "DatabaseUnavailable",
    "InvalidState",
    "StaleLease",
    "WorkOrderNotFound",
    "WorkOrderQuarantined",
]
