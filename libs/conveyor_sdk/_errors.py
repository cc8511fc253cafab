"""Typed errors of the SDK: what a failed call or a failed task tells its caller.

Every error from the platform is a `ConveyorError` subclass chosen by its gRPC
status code, carrying the rich error details the services send (field
violations, reason, correlation id), never a raw `grpc.aio.AioRpcError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

__all__ = [
    "AlreadyExists",
    "Cancelled",
    "ConveyorError",
    "DeadlineExceeded",
    "FailedPrecondition",
    "FieldViolation",
    "Internal",
    "InvalidArgument",
    "NonRetryable",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "ResultTimeout",
    "TaskCancelled",
    "TaskFailed",
    "Unauthenticated",
    "Unavailable",
    "VersionConflict",
    "error_from_rpc",
]


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request: `field` is its path (e.g. "work_order.priority")."""

    field: str
    description: str


@dataclass
class ConveyorError(Exception):
    """A call to the platform failed."""

    message: str
    code: str = "UNKNOWN"
    reason: str = ""
    correlation_id: str = ""
    field_violations: tuple[FieldViolation, ...] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        text = f"{self.code}: {self.message}"
        if self.field_violations:
            text += "; " + "; ".join(f"{v.field}: {v.description}" for v in self.field_violations)
        if self.correlation_id:
            text += f" (correlation id {self.correlation_id})"
        return text


class InvalidArgument(ConveyorError):
    """The request is invalid; `field_violations` says which fields and why."""


class NotFound(ConveyorError):
    """The named resource does not exist (or the caller may not see it)."""


class AlreadyExists(ConveyorError):
    """A resource with that name already exists."""


class FailedPrecondition(ConveyorError):
    """The resource is not in a state that allows the call (e.g. a finished order)."""


class VersionConflict(ConveyorError):
    """ABORTED: an expected version did not match; read again and retry."""


class ResourceExhausted(ConveyorError):
    """A size or rate limit was hit; the message names the value, the limit and the setting."""


class Unauthenticated(ConveyorError):
    """No valid token (or client certificate) was presented."""


class PermissionDenied(ConveyorError):
    """The token lacks the role or namespace the call needs."""


class Unavailable(ConveyorError):
    """The platform (or its database) is unreachable; retry with backoff."""


class DeadlineExceeded(ConveyorError):
    """The call did not finish before its deadline."""


class Cancelled(ConveyorError):
    """The call was cancelled."""


class Internal(ConveyorError):
    """An internal error on the server; it was logged there with this correlation id."""


_BY_CODE: dict[grpc.StatusCode, type[ConveyorError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.ABORTED: VersionConflict,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.CANCELLED: Cancelled,
}


def error_from_rpc(error: grpc.aio.AioRpcError) -> ConveyorError:
    """The typed error for a failed call, with the rich details decoded from its trailers."""
    kind = _BY_CODE.get(error.code(), Internal)
    violations: list[FieldViolation] = []
    reason, correlation, metadata = "", "", {}
    try:
        # from_call reads code(), details() and trailing_metadata(), which AioRpcError has;
        # its stub asks for a grpc.Call.
        status = rpc_status.from_call(error)  # type: ignore[arg-type]
    except Exception:  # malformed trailers must not hide the error itself
        status = None
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations += [FieldViolation(v.field, v.description) for v in bad.field_violations]
        elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, metadata = info.reason, dict(info.metadata)
            correlation = metadata.get("correlation_id", "")
    return kind(
        message=error.details() or error.code().name,
        code=error.code().name,
        reason=reason,
        correlation_id=correlation,
        field_violations=tuple(violations),
        metadata=metadata,
    )


class TaskFailed(Exception):
    """The task ended FAILED or DEAD: its last classified failure.

    Attributes:
        error_type: the classification, e.g. "handler_logic", "timeout", "invalid_input".
        retryable: whether the failure could have succeeded on retry.
        details: small details, e.g. {"exception": "billing.errors.CardDeclined"}.
        attempts: the attempts the order made.
    """

    def __init__(
        self,
        message: str,
        *,
        error_type: str = "",
        retryable: bool = False,
        details: Mapping[str, str] | None = None,
        attempts: int = 0,
        work_order: str = "",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.error_type = error_type
        self.retryable = retryable
        self.details: Mapping[str, str] = dict(details or {})
        self.attempts = attempts
        self.work_order = work_order

    def __str__(self) -> str:
        return f"task {self.work_order} failed ({self.error_type}): {self.message}"


class TaskCancelled(Exception):
    """The task was cancelled before it finished."""


class ResultTimeout(TimeoutError):
    """`result(timeout=...)` passed its timeout; the task goes on."""


class NonRetryable(Exception):
    """Raise it (or a subclass) from a task to fail at once, without retries."""

    def __init__(self, message: str = "", **details: Any) -> None:
        super().__init__(message)
        self.details = {k: str(v) for k, v in details.items()}
