"""An OTLP/gRPC trace receiver in a thread of the bench process, for `--tracing exported`.

The bench's servers export their spans to it as they would to a collector (the
BatchSpanProcessor's real OTLP export path). It keeps each request's bytes as they
arrive (a generic handler, no decoding) and counts the spans only when asked, after the
window: the window measures what tracing costs the platform, not a collector's work
(decoding every request in the bench process took CPU from the 2 cores the platform runs on).
"""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

_EMPTY_RESPONSE = ExportTraceServiceResponse().SerializeToString()


class OtlpSink:
    """`with OtlpSink() as sink:` serves on `sink.endpoint`; `sink.spans()` counts arrivals."""

    def __init__(self) -> None:
        self.endpoint = ""
        self._requests: list[bytes] = []
        self._server: grpc.aio.Server | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def spans(self) -> int:
        return sum(
            len(scope.spans)
            for request in list(self._requests)
            for resource in ExportTraceServiceRequest.FromString(request).resource_spans
            for scope in resource.scope_spans
        )

    async def _export(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        self._requests.append(request)
        return _EMPTY_RESPONSE

    async def _start(self) -> str:
        self._server = grpc.aio.server()
        handler = grpc.method_handlers_generic_handler(
            "opentelemetry.proto.collector.trace.v1.TraceService",
            {"Export": grpc.unary_unary_rpc_method_handler(self._export)},  # bytes in and out
        )
        self._server.add_generic_rpc_handlers((handler,))
        port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()
        return f"http://127.0.0.1:{port}"

    async def _stop(self) -> None:
        if self._server is not None:
            await self._server.stop(0)

    def __enter__(self) -> OtlpSink:
        self._thread.start()
        self.endpoint = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()
