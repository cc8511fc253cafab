"""RED metrics of every RPC a Conveyor server answers: requests, errors, duration.

`RpcMetricsInterceptor` is installed outermost by `create_server`, so every
service (and the health and reflection services) is measured the same way and
the status code it records is the one the caller receives, after
`ErrorInterceptor` mapped exceptions and `AuthInterceptor` refused calls.

Instruments (Prometheus names in docs/observability.md):

* `conveyor.rpc.server.requests` (counter): calls finished, by `service`,
  `method`, `code`.
* `conveyor.rpc.server.errors` (counter): calls finished with a code other
  than OK, by the same labels.
* `conveyor.rpc.server.duration` (histogram, seconds): handler time to the
  last response, by `service`, `method`, `code`.

Labels are bounded: `service` and `method` come from the registered handlers
(an unknown method never reaches an interceptor), `code` is one of the 17 gRPC
status names. Nothing from the request (names, ids, peers) becomes a label.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
from grpc._cython.cygrpc import (  # type: ignore[import-not-found]  # Cython module, no stubs
    AbortError,
)

from conveyor_core.grpc.interceptors import (
    _cancellation_code,
    _is_cancellation,
    _ScopedInterceptor,
    split_method,
)
from conveyor_core.grpc.types import Context
from conveyor_core.metrics import announce, meter

_meter = meter(__name__)

#: Seconds: from sub-millisecond lookups to long polls (lease waits up to 60 s).
RPC_DURATION_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)

REQUESTS = _meter.create_counter(
    "conveyor.rpc.server.requests",
    unit="{call}",
    description="RPCs finished, by service, method and status code.",
)
ERRORS = _meter.create_counter(
    "conveyor.rpc.server.errors",
    unit="{call}",
    description="RPCs finished with a status other than OK, by service, method and code.",
)
DURATION = _meter.create_histogram(
    "conveyor.rpc.server.duration",
    unit="s",
    description="Time from the call reaching the handler to its last response.",
    explicit_bucket_boundaries_advisory=RPC_DURATION_BUCKETS,
)

_Labels = dict[str, str]


class RpcMetricsInterceptor(_ScopedInterceptor):
    """Counts every call and times it; labels: service, method, status code name."""

    def __init__(self) -> None:
        # One attribute dict per (method, code): no allocation per call.
        self._labels: dict[tuple[str, grpc.StatusCode], _Labels] = {}
        announce(ERRORS)  # exported before the first error (conveyor_core.metrics.announce)

    def _labels_of(self, full_method: str, code: grpc.StatusCode) -> _Labels:
        key = (full_method, code)
        labels = self._labels.get(key)
        if labels is None:
            service, method = split_method(full_method)
            labels = {"service": service, "method": method, "code": code.name}
            self._labels[key] = labels
        return labels

    @asynccontextmanager
    async def _scope(
        self, call_details: grpc.HandlerCallDetails, context: Context
    ) -> AsyncIterator[None]:
        started = time.perf_counter()
        code: grpc.StatusCode | None = None
        try:
            yield
        except AbortError:
            code = context.code()
            raise
        except BaseException as exc:
            code = _cancellation_code(context) if _is_cancellation(exc) else None
            code = code or grpc.StatusCode.UNKNOWN
            raise
        else:
            code = context.code()
        finally:
            self._record(call_details.method, code or grpc.StatusCode.OK, started)

    def _record(self, method: str, code: grpc.StatusCode, started: float) -> None:
        if not isinstance(code, grpc.StatusCode):  # defensive: an int from an old runtime
            code = _CODES_BY_VALUE.get(code, grpc.StatusCode.UNKNOWN)
        labels = self._labels_of(method, code)
        REQUESTS.add(1, labels)
        if code is not grpc.StatusCode.OK:
            ERRORS.add(1, labels)
        DURATION.record(time.perf_counter() - started, labels)


_CODES_BY_VALUE = {code.value[0]: code for code in grpc.StatusCode}
