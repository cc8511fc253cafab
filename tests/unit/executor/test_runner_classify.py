"""The HTTP classification table and Retry-After parsing (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from conveyor_executor.domain.failure import ErrorType
from conveyor_executor.runners.classify import classify_exception, classify_status
from conveyor_executor.runners.retry import parse_retry_after


@pytest.mark.parametrize(
    ("status", "type_", "retryable", "unhealthy"),
    [
        (401, ErrorType.AUTH, False, False),
        (403, ErrorType.PERMISSION, False, False),
        (400, ErrorType.INVALID_INPUT, False, False),
        (404, ErrorType.INVALID_INPUT, False, False),
        (422, ErrorType.INVALID_INPUT, False, False),
        (408, ErrorType.TIMEOUT, True, True),
        (429, ErrorType.RATE_LIMITED, True, False),
        (500, ErrorType.HANDLER_LOGIC, False, True),
        (501, ErrorType.HANDLER_LOGIC, False, True),
        (502, ErrorType.HANDLER_LOGIC, True, True),
        (503, ErrorType.HANDLER_LOGIC, True, True),
        (504, ErrorType.TIMEOUT, True, True),
    ],
)
def test_failure_statuses(status: int, type_: ErrorType, retryable: bool, unhealthy: bool) -> None:
    verdict = classify_status(status, "billing")
    assert verdict.error is not None
    assert verdict.error.type is type_
    assert verdict.error.retryable is retryable
    assert verdict.unhealthy is unhealthy
    assert verdict.error.details == {"endpoint": "billing", "status": str(status)}
    assert "billing" in verdict.error.message and str(status) in verdict.error.message


@pytest.mark.parametrize("status", [200, 201, 204, 301, 304])
def test_success_statuses(status: int) -> None:
    verdict = classify_status(status, "billing")
    assert verdict.error is None and not verdict.unhealthy


def test_exceptions() -> None:
    request = httpx.Request("GET", "http://x/")
    connect = classify_exception(httpx.ConnectError("refused", request=request), "e", 5)
    assert connect.error is not None and connect.error.type is ErrorType.NETWORK
    assert connect.error.retryable and connect.unhealthy
    for exc in (httpx.ReadTimeout("slow", request=request), TimeoutError()):
        verdict = classify_exception(exc, "e", 2.5)
        assert verdict.error is not None and verdict.error.type is ErrorType.TIMEOUT
        assert verdict.error.retryable and "2.5s" in verdict.error.message
    bad_url = classify_exception(httpx.UnsupportedProtocol("ftp"), "e", 1)
    assert bad_url.error is not None and bad_url.error.type is ErrorType.INVALID_INPUT
    assert not bad_url.error.retryable


NOW = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("7", 7.0),
        (" 0 ", 0.0),
        ("Tue, 01 Jan 2030 12:00:30 GMT", 30.0),
        ("Tue, 01 Jan 2030 11:00:00 GMT", 0.0),  # in the past: no wait
        (None, None),
        ("", None),
        ("soon", None),
        ("-3", None),
    ],
)
def test_retry_after(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, NOW) == seconds
