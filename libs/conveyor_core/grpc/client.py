"""Client channels that carry the correlation id and trace context on every call.

`create_channel` returns a `grpc.aio.Channel` whose calls, of all four shapes:

* send `x-correlation-id`: the caller's (`conveyor_core.context`), or a new one
  that is then set in the caller's context, so the caller's later log lines
  and calls carry it too;
* run in a CLIENT span and send its W3C `traceparent`, so the server span is
  its child;
* retry on UNAVAILABLE, but only for the methods named idempotent;
* with settings: send `CONVEYOR_PEER_TOKEN` as a bearer token and dial TLS when
  `CONVEYOR_TLS_CA_FILE` is set (`conveyor_core.grpc.auth`).

A caller that loops over independent units of work (a scheduler tick, a
worker's poll) should open `conveyor_core.context.correlation_scope()` per
unit: otherwise the id set by its first call stays in its context for good.

`rich_error_details` (from `conveyor_core.grpc.status`) decodes a failed call.
"""

from __future__ import annotations

import abc
import asyncio
import enum
import functools
import json
import logging
from collections.abc import Callable, Iterable
from typing import Any

import grpc
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from conveyor_core.context import CORRELATION_METADATA_KEY, ensure_correlation_id
from conveyor_core.grpc.auth import channel_credentials
from conveyor_core.grpc.interceptors import rpc_attributes, split_method
from conveyor_core.grpc.status import RichError, rich_error_details
from conveyor_core.grpc.types import (
    StreamStreamCallable,
    StreamUnaryCallable,
    UnaryStreamCallable,
    UnaryUnaryCallable,
)
from conveyor_core.settings import CoreSettings

__all__ = ["RichError", "client_interceptors", "create_channel", "rich_error_details"]

logger = logging.getLogger(__name__)
_tracer = trace.get_tracer(__name__)


def create_channel(
    target: str,
    *,
    settings: CoreSettings | None = None,
    idempotent_methods: Iterable[str] = (),
    credentials: grpc.ChannelCredentials | None = None,
    token: str | None = None,
) -> grpc.aio.Channel:
    """A channel to `target` ("host:port") with Conveyor's client interceptors.

    Args:
        target: the server address.
        settings: message size limit, and the peer token and TLS trust of this
            process (a service calling another); the declared defaults when None.
        idempotent_methods: "pkg.Service" (every method) or "pkg.Service/Method"
            names whose calls are retried on UNAVAILABLE, with backoff.
        credentials: TLS credentials; None: from settings, else plaintext.
        token: bearer token sent on every call; None: `settings.peer_token`.
    """
    if settings is not None:
        if credentials is None:
            credentials = channel_credentials(settings)
        if token is None:
            token = settings.peer_token.get_secret_value() or None
    # Without settings, use the declared default rather than building
    # CoreSettings here, which would read the environment deep in the code.
    max_message_bytes = (
        settings.grpc_max_message_bytes
        if settings is not None
        else CoreSettings.model_fields["grpc_max_message_bytes"].default
    )
    options: list[tuple[str, Any]] = [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.enable_retries", 1),
        ("grpc.service_config", retry_service_config(idempotent_methods)),
    ]
    if settings is not None and settings.tls_server_name:
        options.append(("grpc.ssl_target_name_override", settings.tls_server_name))
    interceptors = client_interceptors(token)
    if credentials is None:
        channel = grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
    else:
        channel = grpc.aio.secure_channel(
            target, credentials, options=options, interceptors=interceptors
        )
    return _CorrelatingChannel(channel)


def retry_service_config(idempotent_methods: Iterable[str]) -> str:
    """A gRPC service config (JSON) retrying UNAVAILABLE for the given methods only."""
    names = []
    for name in idempotent_methods:
        service, _, method = name.partition("/")
        names.append({"service": service, "method": method} if method else {"service": service})
    if not names:
        return json.dumps({"methodConfig": []})
    retry_policy = {
        "maxAttempts": 4,
        "initialBackoff": "0.1s",
        "maxBackoff": "2s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": ["UNAVAILABLE"],
    }
    return json.dumps({"methodConfig": [{"name": names, "retryPolicy": retry_policy}]})


def client_interceptors(token: str | None = None) -> list[grpc.aio.ClientInterceptor]:
    """The interceptors of `create_channel`, outermost first, for all four call shapes.

    With a `token`, every call also sends it as `authorization: Bearer <token>`.

    A grpc.aio channel files each interceptor under the first call-shape base
    class it matches (an `if/elif` chain), so one object implementing all four
    interfaces would only ever see unary-unary calls: each behavior is wrapped
    in one single-shape adapter per shape instead.
    """
    behaviors: list[_CallInterceptor] = [CorrelationClientInterceptor(), TracingClientInterceptor()]
    if token:
        behaviors.append(BearerClientInterceptor(token))
    return [adapter(behavior) for adapter in _SHAPE_ADAPTERS for behavior in behaviors]


class _Shape(enum.Enum):
    UNARY_UNARY = enum.auto()
    UNARY_STREAM = enum.auto()
    STREAM_UNARY = enum.auto()
    STREAM_STREAM = enum.auto()


class _CallInterceptor(abc.ABC):
    """One client-side behavior, written once for the four call shapes."""

    @abc.abstractmethod
    async def intercept(
        self, continuation: Any, details: grpc.aio.ClientCallDetails, request: Any, shape: _Shape
    ) -> Any:
        """Perform the call through `continuation`, adding this interceptor's behaviour."""


class _UnaryUnaryAdapter(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, behavior: _CallInterceptor) -> None:
        self._behavior = behavior

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await self._behavior.intercept(continuation, details, request, _Shape.UNARY_UNARY)


class _UnaryStreamAdapter(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, behavior: _CallInterceptor) -> None:
        self._behavior = behavior

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await self._behavior.intercept(continuation, details, request, _Shape.UNARY_STREAM)


class _StreamUnaryAdapter(grpc.aio.StreamUnaryClientInterceptor):
    def __init__(self, behavior: _CallInterceptor) -> None:
        self._behavior = behavior

    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await self._behavior.intercept(continuation, details, requests, _Shape.STREAM_UNARY)


class _StreamStreamAdapter(grpc.aio.StreamStreamClientInterceptor):
    def __init__(self, behavior: _CallInterceptor) -> None:
        self._behavior = behavior

    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await self._behavior.intercept(continuation, details, requests, _Shape.STREAM_STREAM)


_SHAPE_ADAPTERS: tuple[Callable[[_CallInterceptor], grpc.aio.ClientInterceptor], ...] = (
    _UnaryUnaryAdapter,
    _UnaryStreamAdapter,
    _StreamUnaryAdapter,
    _StreamStreamAdapter,
)


def _with_metadata(
    details: grpc.aio.ClientCallDetails, entries: Iterable[tuple[str, str]]
) -> grpc.aio.ClientCallDetails:
    """`details` with `entries` added, except keys the caller already set."""
    metadata = grpc.aio.Metadata.from_tuple(tuple(details.metadata or ()))
    for key, value in entries:
        if not metadata.get_all(key):
            metadata.add(key, value)
    return details._replace(metadata=metadata)  # type: ignore[attr-defined,no-any-return]


class CorrelationClientInterceptor(_CallInterceptor):
    """Sends the current correlation id, making one if the context has none."""

    async def intercept(
        self, continuation: Any, details: grpc.aio.ClientCallDetails, request: Any, shape: _Shape
    ) -> Any:
        # Interceptors run in a task with a copy of the caller's context, so a
        # new id set here reaches the call and later interceptors only;
        # _CorrelatingChannel sets it in the caller's context beforehand.
        correlation_id = ensure_correlation_id()
        details = _with_metadata(details, [(CORRELATION_METADATA_KEY, correlation_id)])
        return await continuation(details, request)


class BearerClientInterceptor(_CallInterceptor):
    """Sends `authorization: Bearer <token>` unless the call set its own authorization."""

    def __init__(self, token: str) -> None:
        self._entry = ("authorization", f"Bearer {token}")

    async def intercept(
        self, continuation: Any, details: grpc.aio.ClientCallDetails, request: Any, shape: _Shape
    ) -> Any:
        return await continuation(_with_metadata(details, [self._entry]), request)


class TracingClientInterceptor(_CallInterceptor):
    """Runs each call in a CLIENT span and sends its W3C trace context."""

    def __init__(self) -> None:
        # Strong references: the event loop keeps only weak ones to tasks.
        self._span_enders: set[asyncio.Task[None]] = set()

    async def intercept(
        self, continuation: Any, details: grpc.aio.ClientCallDetails, request: Any, shape: _Shape
    ) -> Any:
        method_name = details.method
        if isinstance(method_name, bytes):
            method_name = method_name.decode()
        service, method = split_method(method_name)
        span = _tracer.start_span(
            f"{service}/{method}", kind=SpanKind.CLIENT, attributes=rpc_attributes(service, method)
        )
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(span))
        call = None
        try:
            call = await continuation(_with_metadata(details, carrier.items()), request)
            if shape is _Shape.UNARY_UNARY:
                await call  # the span covers the response; errors raise AioRpcError here
        except grpc.aio.AioRpcError as error:
            _finish_client_span(span, error.code(), error.details())
            raise
        except BaseException as error:
            if call is not None:
                call.cancel()  # the caller gave up on a unary call still in flight
            cancelled = isinstance(error, asyncio.CancelledError)
            code = grpc.StatusCode.CANCELLED if cancelled else grpc.StatusCode.UNKNOWN
            _finish_client_span(span, code, repr(error))
            raise
        if shape is _Shape.UNARY_UNARY:
            _finish_client_span(span, grpc.StatusCode.OK, None)
        else:
            # Streaming calls outlive this method (and stream-request calls may
            # still be waiting for the caller's writes): end the span when the
            # call is done. A done callback, unlike a task awaiting the status,
            # holds no reference to the call: tracing never keeps a call alive.
            call.add_done_callback(functools.partial(self._on_call_done, span))
        return call

    def _on_call_done(self, span: trace.Span, call: grpc.aio.Call) -> None:
        # The status getters are coroutines, though the call is done and they
        # return at once.
        task = asyncio.get_running_loop().create_task(_finish_done_call(span, call))
        self._span_enders.add(task)
        task.add_done_callback(self._span_enders.discard)


async def _finish_done_call(span: trace.Span, call: grpc.aio.Call) -> None:
    code, details = grpc.StatusCode.UNKNOWN, "status unavailable"
    try:
        code = await call.code()
        details = await call.details()
    finally:
        _finish_client_span(span, code, details)


def _finish_client_span(span: trace.Span, code: grpc.StatusCode, details: str | None) -> None:
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code is not grpc.StatusCode.OK:
        span.set_status(Status(StatusCode.ERROR, f"{code.name}: {details or ''}"))
    span.end()


class _EnsuresCorrelation:
    """A multi-callable that sets a correlation id in the caller's context, then calls."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        ensure_correlation_id()
        return self._inner(*args, **kwargs)


class _UnaryUnary(_EnsuresCorrelation, UnaryUnaryCallable):
    pass


class _UnaryStream(_EnsuresCorrelation, UnaryStreamCallable):
    pass


class _StreamUnary(_EnsuresCorrelation, StreamUnaryCallable):
    pass


class _StreamStream(_EnsuresCorrelation, StreamStreamCallable):
    pass


class _CorrelatingChannel(grpc.aio.Channel):
    """Delegates to a channel; each call first ensures the caller's context has a correlation id.

    Needed because client interceptors run in their own task: an id they make
    up cannot reach the caller's context.
    """

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._channel = channel

    async def __aenter__(self) -> _CorrelatingChannel:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._channel.close(None)

    async def close(self, grace: float | None = None) -> None:
        await self._channel.close(grace)

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return self._channel.get_state(try_to_connect)

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        await self._channel.wait_for_state_change(last_observed_state)

    async def channel_ready(self) -> None:
        await self._channel.channel_ready()

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _UnaryUnary(self._channel.unary_unary(method, *args, **kwargs))

    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _UnaryStream(self._channel.unary_stream(method, *args, **kwargs))

    def stream_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _StreamUnary(self._channel.stream_unary(method, *args, **kwargs))

    def stream_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _StreamStream(self._channel.stream_stream(method, *args, **kwargs))
