"""Domain error root shared by every service.

Services raise these from their domain and store layers; one server
interceptor (`conveyor_core.grpc.interceptors.ErrorInterceptor`) maps them to
gRPC status codes with rich details (google.rpc.BadRequest,
PreconditionFailure, ResourceInfo, ErrorInfo), so a client in any language
reads the same structured error. A subclass's docstring is its default message.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import grpc


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad field of a request: `field` is a proto field path (`work_order.priority`)."""

    field: str
    description: str


@dataclass(frozen=True, slots=True)
class PreconditionViolation:
    """One unmet precondition: `type` such as "LEASE", `subject` the resource name."""

    type: str
    subject: str
    description: str


class ConveyorError(Exception):
    """Internal error."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    #: Stable machine-readable reason for google.rpc.ErrorInfo (UPPER_SNAKE).
    reason: str = "INTERNAL"

    def __init__(
        self, message: str | None = None, *, metadata: dict[str, str] | None = None
    ) -> None:
        self.message = message or (self.__doc__ or self.__class__.__name__).strip()
        #: Extra google.rpc.ErrorInfo metadata (besides the correlation id).
        self.metadata: dict[str, str] = dict(metadata or {})
        super().__init__(self.message)


class InvalidArgument(ConveyorError):
    """The request has invalid fields."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "INVALID_ARGUMENT"

    def __init__(
        self,
        violations: FieldViolation | Iterable[FieldViolation],
        message: str | None = None,
    ) -> None:
        if isinstance(violations, FieldViolation):
            violations = [violations]
        self.violations: tuple[FieldViolation, ...] = tuple(violations)
        if message is None and self.violations:
            message = "; ".join(f"{v.field}: {v.description}" for v in self.violations)
        super().__init__(message)


class NotFound(ConveyorError):
    """The resource does not exist."""

    code = grpc.StatusCode.NOT_FOUND
    reason = "NOT_FOUND"

    def __init__(self, resource_type: str, resource_name: str, message: str | None = None):
        self.resource_type = resource_type
        self.resource_name = resource_name
        super().__init__(message or f"{resource_type} {resource_name!r} not found")


class AlreadyExists(ConveyorError):
    """The resource already exists."""

    code = grpc.StatusCode.ALREADY_EXISTS
    reason = "ALREADY_EXISTS"


class FailedPrecondition(ConveyorError):
    """The resource is not in a state that allows this operation."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "FAILED_PRECONDITION"

    def __init__(
        self,
        violations: PreconditionViolation | Iterable[PreconditionViolation] = (),
        message: str | None = None,
    ) -> None:
        if isinstance(violations, PreconditionViolation):
            violations = [violations]
        self.violations: tuple[PreconditionViolation, ...] = tuple(violations)
        if message is None and self.violations:
            message = "; ".join(v.description for v in self.violations)
        super().__init__(message)


class Aborted(ConveyorError):
    """The operation conflicted with a concurrent change; re-read and retry."""

    code = grpc.StatusCode.ABORTED
    reason = "ABORTED"


class ResourceExhausted(ConveyorError):
    """A limit was reached."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "RESOURCE_EXHAUSTED"


class Unauthenticated(ConveyorError):
    """The request has no valid credentials."""

    code = grpc.StatusCode.UNAUTHENTICATED
    reason = "UNAUTHENTICATED"


class PermissionDenied(ConveyorError):
    """The caller may not do this in this namespace."""

    code = grpc.StatusCode.PERMISSION_DENIED
    reason = "PERMISSION_DENIED"


class Unavailable(ConveyorError):
    """A dependency is unavailable; retry with backoff."""

    code = grpc.StatusCode.UNAVAILABLE
    reason = "UNAVAILABLE"


class DatabaseUnavailable(Unavailable):
    """The database connection was lost or could not be made; the call may or may not have
    taken effect: retry with backoff (idempotency keys make a retried submit safe)."""

    reason = "DATABASE_UNAVAILABLE"
