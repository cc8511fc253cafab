"""Errors of the scheduler service, each a conveyor_core error by gRPC code."""

from __future__ import annotations

from conveyor_core.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    NotFound,
    PreconditionViolation,
)

JOB_TYPE = "conveyor.scheduler.v1.Job"
SCHEDULE_TYPE = "conveyor.scheduler.v1.Schedule"


class JobNotFound(NotFound):
    def __init__(self, name: str) -> None:
        super().__init__(JOB_TYPE, name)


class ScheduleNotFound(NotFound):
    def __init__(self, name: str) -> None:
        super().__init__(SCHEDULE_TYPE, name)


class JobExists(AlreadyExists):
    """A job with this id already exists."""

    def __init__(self, name: str) -> None:
        super().__init__(f"job {name!r} already exists")


class ScheduleExists(AlreadyExists):
    def __init__(self, name: str) -> None:
        super().__init__(f"schedule {name!r} already exists")


class JobVersionConflict(Aborted):
    """The job changed since the version the caller read."""

    def __init__(self, name: str, expected: int, actual: int) -> None:
        super().__init__(f"job {name!r} is at version {actual}, not {expected}: re-read and retry")


class TooManySchedules(FailedPrecondition):
    def __init__(self, job: str, limit: int) -> None:
        super().__init__(
            PreconditionViolation("LIMIT", job, f"a job has at most {limit} schedules")
        )


class NotAvailable(FailedPrecondition):
    def __init__(self, subject: str, description: str) -> None:
        super().__init__(PreconditionViolation("STATE", subject, description))
