"""The SDK's channel: plain grpcio with a bearer token, a correlation id and W3C trace
context on every call. It imports nothing of the server side."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import grpc
from opentelemetry import propagate  # trace context: calls join the caller's trace

CORRELATION_METADATA_KEY = "x-correlation-id"


class _Metadata(grpc.aio.UnaryUnaryClientInterceptor, grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, token: str | None) -> None:
        self._token = token

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = list(details.metadata or ())
        keys = {key for key, _ in metadata}
        if self._token and "authorization" not in keys:
            metadata.append(("authorization", f"Bearer {self._token}"))
        if CORRELATION_METADATA_KEY not in keys:
            metadata.append((CORRELATION_METADATA_KEY, uuid.uuid4().hex))
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        metadata += [(k, v) for k, v in carrier.items() if k not in keys]
        return grpc.aio.ClientCallDetails(
            details.method,
            details.timeout,
            grpc.aio.Metadata.from_tuple(tuple(metadata)),
            details.credentials,
            details.wait_for_ready,
        )

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


def open_channel(
    address: str,
    *,
    token: str | None = None,
    tls: bool = False,
    root_certificates: bytes | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.aio.Channel:
    interceptors = [_Metadata(token)]
    opts = [("grpc.max_receive_message_length", 16 * 1024 * 1024), *options]
    if tls or root_certificates:
        credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates)
        return grpc.aio.secure_channel(address, credentials, opts, interceptors=interceptors)
    return grpc.aio.insecure_channel(address, opts, interceptors=interceptors)
