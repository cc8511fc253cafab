"""Classified failures: every failed call, iteration or run says what went wrong.

The classification decides what happens next (retry or fail fast) and tells a
person what to do. It travels to the queue as a conveyor.common.v1.Failure
(`type` is the ErrorType value, `retryable`, `message`, `details`).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field


class ErrorType(enum.StrEnum):
    TIMEOUT = "timeout"
    NETWORK = "network"
    AUTH = "auth"
    PERMISSION = "permission"
    RATE_LIMITED = "rate_limited"
    INVALID_INPUT = "invalid_input"
    HANDLER_LOGIC = "handler_logic"
    VERIFICATION_FAILED = "verification_failed"
    CIRCUIT_OPEN = "circuit_open"
    ABORTED = "aborted"
    INTERNAL = "internal"


# What a failure of each type usually means for a retry. A specific failure may
# override it (a 503 is handler_logic-ish but retryable; see the HTTP runner).
RETRYABLE_BY_DEFAULT: Mapping[ErrorType, bool] = {
    ErrorType.TIMEOUT: True,
    ErrorType.NETWORK: True,
    ErrorType.AUTH: False,
    ErrorType.PERMISSION: False,
    ErrorType.RATE_LIMITED: True,
    ErrorType.INVALID_INPUT: False,
    ErrorType.HANDLER_LOGIC: False,
    ErrorType.VERIFICATION_FAILED: True,
    ErrorType.CIRCUIT_OPEN: True,
    ErrorType.ABORTED: False,
    ErrorType.INTERNAL: True,
}


@dataclass(frozen=True)
class ClassifiedError:
    """A failure with its type, an actionable message and whether a retry may help.

    `details` holds small references a person follows up on: an endpoint name,
    an HTTP status, an output reference (`outputs/<id>`), an exit code.
    """

    type: ErrorType
    message: str
    retryable: bool
    details: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, type_: ErrorType, message: str, **details: str) -> ClassifiedError:
        """A failure with the type's default retryability."""
        return cls(type_, message, RETRYABLE_BY_DEFAULT[type_], dict(details))
