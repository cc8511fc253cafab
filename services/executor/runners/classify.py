"""What an HTTP answer (or the lack of one) means: the classification table (pure).

| outcome                         | type          | retryable | breaker |
| ------------------------------- | ------------- | --------- | ------- |
| 1xx/2xx/3xx                     | (success)     |           | healthy |
| connect error, broken transfer  | network       | yes       | failure |
| call timeout, 408, 504          | timeout       | yes       | failure |
| 401                             | auth          | no        | healthy |
| 403                             | permission    | no        | healthy |
| 429                             | rate_limited  | yes       | healthy |
| 502, 503                        | handler_logic | yes       | failure |
| other 4xx                       | invalid_input | no        | healthy |
| other 5xx (500, 501, ...)       | handler_logic | no        | failure |

Other 5xx are not retried: the endpoint's own code failed on this request, so
the same request most likely fails the same way, and a non-idempotent call
(POST) may already have had effects. 502/503/504 come from a gateway or an
overloaded server before the handler ran, so they are retried. The breaker
counts only answers that say the endpoint is unhealthy; a 4xx proves it is
up (the request is at fault), so it counts as a success for the breaker.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from conveyor_executor.domain.failure import ClassifiedError, ErrorType

_RETRYABLE_SERVER = frozenset({502, 503})


@dataclass(frozen=True)
class CallVerdict:
    """How one call ended: `error` None means success; `unhealthy` feeds the breaker."""

    error: ClassifiedError | None
    unhealthy: bool


def classify_status(status: int, endpoint: str) -> CallVerdict:
    """The verdict of an HTTP answer with status `status` from `endpoint`."""
    details = {"endpoint": endpoint, "status": str(status)}
    if status < 400:
        return CallVerdict(None, unhealthy=False)
    where = f"endpoint {endpoint!r} answered HTTP {status}"
    if status in (408, 504):
        return _verdict(ErrorType.TIMEOUT, f"{where}: the server timed out", True, True, details)
    if status == 401:
        message = f"{where}: check the credentials (secret) the job sends"
        return _verdict(ErrorType.AUTH, message, False, False, details)
    if status == 403:
        message = f"{where}: the credentials lack permission for this call"
        return _verdict(ErrorType.PERMISSION, message, False, False, details)
    if status == 429:
        message = f"{where}: rate limited; retried after the server's Retry-After"
        return _verdict(ErrorType.RATE_LIMITED, message, True, False, details)
    if status in _RETRYABLE_SERVER:
        message = f"{where}: the server is unavailable; retried"
        return _verdict(ErrorType.HANDLER_LOGIC, message, True, True, details)
    if status < 500:
        message = f"{where}: the request was refused; fix the job's definition or input"
        return _verdict(ErrorType.INVALID_INPUT, message, False, False, details)
    message = f"{where}: the endpoint failed handling the request; see its logs"
    return _verdict(ErrorType.HANDLER_LOGIC, message, False, True, details)


def classify_exception(exc: BaseException, endpoint: str, timeout: float) -> CallVerdict:
    """The verdict of a call that got no answer because of `exc`."""
    details = {"endpoint": endpoint, "exception": type(exc).__name__}
    # Most specific first: UnsupportedProtocol is also a TransportError.
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        message = f"endpoint {endpoint!r} did not answer within {timeout:g}s"
        return _verdict(ErrorType.TIMEOUT, message, True, True, details)
    if isinstance(exc, httpx.InvalidURL | httpx.UnsupportedProtocol):
        message = f"endpoint {endpoint!r} has an unusable URL: {exc}"
        return _verdict(ErrorType.INVALID_INPUT, message, False, False, details)
    if isinstance(exc, httpx.TransportError):
        message = f"endpoint {endpoint!r} unreachable: {type(exc).__name__}: {exc}"
        return _verdict(ErrorType.NETWORK, message, True, True, details)
    message = f"calling endpoint {endpoint!r} failed: {type(exc).__name__}: {exc}"
    return _verdict(ErrorType.INTERNAL, message, True, False, details)


def _verdict(
    type_: ErrorType, message: str, retryable: bool, unhealthy: bool, details: dict[str, str]
) -> CallVerdict:
    return CallVerdict(ClassifiedError(type_, message, retryable, details), unhealthy)
