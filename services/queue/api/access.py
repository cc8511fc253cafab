"""Who may call each WorkOrderQueueService method when authentication is on (docs/security.md)."""

from __future__ import annotations

from conveyor_core.auth import Access, Role, access

ACCESS: dict[str, Access] = {
    # clients that create work
    "SubmitWorkOrder": access(Role.SUBMITTER, "parent"),
    "BatchSubmitWorkOrders": access(Role.SUBMITTER, "parent", "requests.parent"),
    "CancelWorkOrder": access(Role.SUBMITTER, "name"),
    # workers
    "LeaseWorkOrders": access(Role.WORKER, "parent"),
    "HeartbeatWorkOrder": access(Role.WORKER, "name"),
    "CompleteWorkOrder": access(Role.WORKER, "name"),
    "BatchCompleteWorkOrders": access(Role.WORKER, "parent", "requests.name"),
    "FailWorkOrder": access(Role.WORKER, "name"),
    # reading
    "GetWorkOrder": access(Role.VIEWER, "name"),
    "ListWorkOrders": access(Role.VIEWER, "parent"),
    "ListWorkOrderEvents": access(Role.VIEWER, "parent"),
    "GetWorkOrderPosition": access(Role.VIEWER, "name"),
    "GetQueue": access(Role.VIEWER, "name"),
    "ListQueues": access(Role.VIEWER, "parent"),
    "GetQueueStats": access(Role.VIEWER, "name"),
    "ListRedrives": access(Role.VIEWER, "parent"),
    # operating the queues
    "UpdateQueue": access(Role.OPERATOR, "queue.name"),
    "PauseQueue": access(Role.OPERATOR, "name"),
    "ResumeQueue": access(Role.OPERATOR, "name"),
    "RedriveWorkOrders": access(Role.OPERATOR, "parent"),
}
