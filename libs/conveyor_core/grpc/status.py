"""The rich gRPC error model: domain errors to google.rpc.Status and back.

The server side (`status_for_error`, `internal_status`) builds a
`google.rpc.Status` whose details a client in any language can decode from the
`grpc-status-details-bin` trailing metadata. The client side
(`rich_error_details`) decodes it into a `RichError`.

Details sent, by error type:
  * `InvalidArgument`: google.rpc.BadRequest, one FieldViolation per violation.
  * `FailedPrecondition`: google.rpc.PreconditionFailure.
  * `NotFound`: google.rpc.ResourceInfo.
  * always: google.rpc.ErrorInfo(reason, domain="conveyor.dev",
    metadata={"correlation_id": ..., **error.metadata}).
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError, Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from conveyor_core.context import CORRELATION_METADATA_KEY
from conveyor_core.errors import ConveyorError, FailedPrecondition, InvalidArgument, NotFound

ERROR_DOMAIN = "conveyor.dev"
STATUS_DETAILS_METADATA_KEY = "grpc-status-details-bin"


def status_for_error(error: ConveyorError, correlation_id: str | None) -> grpc.Status:
    """The status (code, message, rich details in trailing metadata) for a domain error."""
    details: list[Message] = []
    if isinstance(error, InvalidArgument):
        details.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=violation.field, description=violation.description
                    )
                    for violation in error.violations
                ]
            )
        )
    elif isinstance(error, FailedPrecondition):
        details.append(
            error_details_pb2.PreconditionFailure(
                violations=[
                    error_details_pb2.PreconditionFailure.Violation(
                        type=violation.type,
                        subject=violation.subject,
                        description=violation.description,
                    )
                    for violation in error.violations
                ]
            )
        )
    elif isinstance(error, NotFound):
        details.append(
            error_details_pb2.ResourceInfo(
                resource_type=error.resource_type,
                resource_name=error.resource_name,
                description=error.message,
            )
        )
    details.append(_error_info(error.reason, correlation_id, error.metadata))
    return _to_grpc_status(error.code, error.message, details)


def internal_status(correlation_id: str) -> grpc.Status:
    """INTERNAL with a masked message: the caller learns only the id to quote."""
    return _to_grpc_status(
        grpc.StatusCode.INTERNAL,
        f"internal error (correlation id {correlation_id})",
        [_error_info("INTERNAL", correlation_id)],
    )


def _error_info(
    reason: str, correlation_id: str | None, extra: dict[str, str] | None = None
) -> error_details_pb2.ErrorInfo:
    metadata = dict(extra or {})
    if correlation_id:
        metadata["correlation_id"] = correlation_id
    return error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN, metadata=metadata)


def _to_grpc_status(code: grpc.StatusCode, message: str, details: list[Message]) -> grpc.Status:
    status = status_pb2.Status(code=code.value[0], message=message)
    for detail in details:
        packed = any_pb2.Any()
        packed.Pack(detail)
        status.details.append(packed)
    return rpc_status.to_status(status)


@dataclass(frozen=True, slots=True)
class RichError:
    """What a failed call said, decoded from its status and rich details.

    Attributes:
        code: the gRPC status code.
        message: the status message.
        field_violations: (field, description) pairs from google.rpc.BadRequest.
        precondition_violations: (type, subject, description) triples from
            google.rpc.PreconditionFailure.
        reason: google.rpc.ErrorInfo.reason (UPPER_SNAKE), if sent.
        domain: google.rpc.ErrorInfo.domain, if sent.
        resource_type: google.rpc.ResourceInfo.resource_type, if sent.
        resource_name: google.rpc.ResourceInfo.resource_name, if sent.
        correlation_id: from the `x-correlation-id` response metadata, or ErrorInfo.
        info: google.rpc.ErrorInfo.metadata other than the correlation id, e.g.
            {"principal": ..., "required_role": ...} on PERMISSION_DENIED.
    """

    code: grpc.StatusCode
    message: str
    field_violations: tuple[tuple[str, str], ...] = ()
    precondition_violations: tuple[tuple[str, str, str], ...] = ()
    reason: str | None = None
    domain: str | None = None
    resource_type: str | None = None
    resource_name: str | None = None
    correlation_id: str | None = None
    info: tuple[tuple[str, str], ...] = ()


def rich_error_details(error: grpc.aio.AioRpcError) -> RichError:
    """Decode a failed call's rich error details (empty ones if the server sent none).

    Example:
        >>> try:
        ...     await stub.SubmitWorkOrder(request)
        ... except grpc.aio.AioRpcError as error:
        ...     details = rich_error_details(error)
        ...     details.field_violations  # (("work_order.priority", "must be 0-9"),)
    """
    fields: dict[str, object] = {}
    for detail in _status_of(error).details:
        fields.update(_decode_detail(detail))
    # Trailers-only responses carry no initial metadata; ErrorInfo still names the id.
    info_correlation_id = fields.pop("error_info_correlation_id", None)
    correlation_id = _metadata_value(error.initial_metadata(), CORRELATION_METADATA_KEY)
    if not isinstance(correlation_id, str):
        correlation_id = info_correlation_id if isinstance(info_correlation_id, str) else None
    return RichError(
        code=error.code(),
        message=error.details() or "",
        correlation_id=correlation_id,
        **fields,  # type: ignore[arg-type]
    )


def _status_of(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    raw = _metadata_value(error.trailing_metadata(), STATUS_DETAILS_METADATA_KEY)
    if not isinstance(raw, bytes):
        return status_pb2.Status()
    try:
        return status_pb2.Status.FromString(raw)
    except DecodeError:
        return status_pb2.Status()


def _holds(detail: any_pb2.Any, message: type[Message]) -> bool:
    """Whether `detail` packs a `message` (Any.Is, whose stub wants a pure-Python Descriptor)."""
    return detail.TypeName() == message.DESCRIPTOR.full_name


def _decode_detail(detail: any_pb2.Any) -> dict[str, object]:
    if _holds(detail, error_details_pb2.BadRequest):
        bad_request = error_details_pb2.BadRequest()
        detail.Unpack(bad_request)
        return {
            "field_violations": tuple(
                (v.field, v.description) for v in bad_request.field_violations
            )
        }
    if _holds(detail, error_details_pb2.PreconditionFailure):
        failure = error_details_pb2.PreconditionFailure()
        detail.Unpack(failure)
        return {
            "precondition_violations": tuple(
                (v.type, v.subject, v.description) for v in failure.violations
            )
        }
    if _holds(detail, error_details_pb2.ResourceInfo):
        resource = error_details_pb2.ResourceInfo()
        detail.Unpack(resource)
        return {"resource_type": resource.resource_type, "resource_name": resource.resource_name}
    if _holds(detail, error_details_pb2.ErrorInfo):
        info = error_details_pb2.ErrorInfo()
        detail.Unpack(info)
        return {
            "reason": info.reason,
            "domain": info.domain,
            "error_info_correlation_id": info.metadata.get("correlation_id"),
            "info": tuple(
                sorted((k, v) for k, v in info.metadata.items() if k != "correlation_id")
            ),
        }
    return {}


def _metadata_value(metadata: object, key: str) -> str | bytes | None:
    for entry_key, value in metadata or ():  # type: ignore[attr-defined]
        if entry_key == key:
            return value  # type: ignore[no-any-return]
    return None
