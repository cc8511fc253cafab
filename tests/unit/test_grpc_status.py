"""Domain errors to google.rpc.Status and back, without a server."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2, status_pb2

from conveyor_core.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PreconditionViolation,
)
from conveyor_core.grpc import ERROR_DOMAIN, internal_status, rich_error_details, status_for_error
from conveyor_core.grpc.status import STATUS_DETAILS_METADATA_KEY


def as_received(
    status: grpc.Status, initial: tuple[tuple[str, str], ...] = ()
) -> grpc.aio.AioRpcError:
    """What a client would catch had a server aborted with `status`."""
    return grpc.aio.AioRpcError(
        status.code,
        initial_metadata=grpc.aio.Metadata(*initial),
        trailing_metadata=grpc.aio.Metadata(*status.trailing_metadata),
        details=status.details,
    )


def test_status_carries_code_message_and_one_details_entry_per_kind() -> None:
    status = status_for_error(NotFound("queue", "billing"), "cid-1")

    assert status.code is grpc.StatusCode.NOT_FOUND
    assert status.details == "queue 'billing' not found"
    [(key, raw)] = status.trailing_metadata
    assert key == STATUS_DETAILS_METADATA_KEY
    decoded = status_pb2.Status.FromString(raw)
    assert decoded.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert [detail.TypeName() for detail in decoded.details] == [
        "google.rpc.ResourceInfo",
        "google.rpc.ErrorInfo",
    ]
    info = error_details_pb2.ErrorInfo()
    decoded.details[1].Unpack(info)
    assert (info.reason, info.domain, dict(info.metadata)) == (
        "NOT_FOUND",
        ERROR_DOMAIN,
        {"correlation_id": "cid-1"},
    )


def test_invalid_argument_round_trip() -> None:
    error = InvalidArgument(
        [FieldViolation("a.b", "too big"), FieldViolation("c", "required")], message="bad request"
    )

    details = rich_error_details(as_received(status_for_error(error, "cid-2")))

    assert details.code is grpc.StatusCode.INVALID_ARGUMENT
    assert details.message == "bad request"
    assert details.field_violations == (("a.b", "too big"), ("c", "required"))
    assert details.reason == "INVALID_ARGUMENT"
    assert details.correlation_id == "cid-2"


def test_failed_precondition_round_trip() -> None:
    error = FailedPrecondition(
        [
            PreconditionViolation("LEASE", "work_orders/1", "lease expired"),
            PreconditionViolation("STATE", "work_orders/1", "already completed"),
        ]
    )

    details = rich_error_details(as_received(status_for_error(error, None)))

    assert details.precondition_violations == (
        ("LEASE", "work_orders/1", "lease expired"),
        ("STATE", "work_orders/1", "already completed"),
    )
    assert details.message == "lease expired; already completed"
    assert details.correlation_id is None


def test_other_errors_get_error_info_only() -> None:
    details = rich_error_details(as_received(status_for_error(AlreadyExists(), "cid-3")))

    assert details.code is grpc.StatusCode.ALREADY_EXISTS
    assert details.message == "The resource already exists."
    assert (details.reason, details.domain) == ("ALREADY_EXISTS", ERROR_DOMAIN)
    assert details.field_violations == details.precondition_violations == ()


def test_internal_status_is_masked() -> None:
    details = rich_error_details(as_received(internal_status("cid-4")))

    assert details.code is grpc.StatusCode.INTERNAL
    assert details.message == "internal error (correlation id cid-4)"
    assert (details.reason, details.correlation_id) == ("INTERNAL", "cid-4")


def test_correlation_id_prefers_response_metadata() -> None:
    received = as_received(
        status_for_error(AlreadyExists(), "from-error-info"),
        initial=(("x-correlation-id", "from-headers"),),
    )

    assert rich_error_details(received).correlation_id == "from-headers"


def test_error_without_details_decodes_to_bare_code_and_message() -> None:
    received = grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(),
        details="connection refused",
    )

    details = rich_error_details(received)

    assert (details.code, details.message) == (grpc.StatusCode.UNAVAILABLE, "connection refused")
    assert details.reason is None and details.field_violations == ()


def test_garbage_details_are_ignored() -> None:
    received = grpc.aio.AioRpcError(
        grpc.StatusCode.INTERNAL,
        grpc.aio.Metadata(),
        grpc.aio.Metadata((STATUS_DETAILS_METADATA_KEY, b"\xff\xff not a proto")),
        details="boom",
    )

    assert rich_error_details(received).reason is None
