"""Who may call each ExecutorService method when authentication is on (docs/security.md)."""

from __future__ import annotations

from conveyor_core.auth import Access, Role, access

ACCESS: dict[str, Access] = {
    "GetRun": access(Role.VIEWER, "name"),
    "ListRuns": access(Role.VIEWER, "parent"),
    "WatchRun": access(Role.VIEWER, "name"),
    "ListRunSteps": access(Role.VIEWER, "parent"),
    "GetOutput": access(Role.VIEWER, "name"),
    "ListOutputs": access(Role.VIEWER, "parent"),
    "GetJobUsage": access(Role.VIEWER, "job"),
    "AbortRun": access(Role.OPERATOR, "name"),
}
