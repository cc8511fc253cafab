"""Who may call each SchedulerService method when authentication is on (docs/security.md)."""

from __future__ import annotations

from conveyor_core.auth import Access, Role, access

ACCESS: dict[str, Access] = {
    # reading
    "GetJob": access(Role.VIEWER, "name"),
    "ListJobs": access(Role.VIEWER, "parent"),
    "GetSchedule": access(Role.VIEWER, "name"),
    "ListSchedules": access(Role.VIEWER, "parent"),
    "PreviewSchedule": access(Role.VIEWER, "name"),
    "ListFires": access(Role.VIEWER, "parent"),
    "ListPolicyDecisions": access(Role.VIEWER, "parent"),
    # defining and steering what runs when
    "CreateJob": access(Role.OPERATOR, "parent"),
    "UpdateJob": access(Role.OPERATOR, "job.name"),
    "DeleteJob": access(Role.OPERATOR, "name"),
    "CreateSchedule": access(Role.OPERATOR, "parent"),
    "UpdateSchedule": access(Role.OPERATOR, "schedule.name"),
    "DeleteSchedule": access(Role.OPERATOR, "name"),
    "PauseSchedule": access(Role.OPERATOR, "name"),
    "ResumeSchedule": access(Role.OPERATOR, "name"),
    "TriggerSchedule": access(Role.OPERATOR, "name"),
    "RunJob": access(Role.OPERATOR, "name"),
    "BackfillSchedule": access(Role.OPERATOR, "name"),
}
