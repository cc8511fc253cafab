"""Server interceptors: correlation id, tracing, and domain-error mapping.

Each interceptor is one async context manager (`_scope`) placed around the
handler, whatever the call shape: `_ScopedInterceptor` wraps unary-unary,
unary-stream, stream-unary and stream-stream handlers alike, and for
server-streaming handlers the scope stays open until the last response, so an
exception raised mid-stream is seen too.

`server_interceptors()` returns them in the order to install (the first is
outermost):

1. `CorrelationInterceptor` adopts the caller's `x-correlation-id` (or makes
   one) and sets `conveyor_core.context.correlation_id_var` for the call. Only
   an id the server made (none was sent, or the one sent was malformed) is sent
   back, in the initial metadata: a caller that sent a valid id knows it
   already, and the extra send costs 0.1-0.2 ms of server CPU per call. Errors
   name the id in their `ErrorInfo` either way. Handlers therefore must not
   call `context.send_initial_metadata` themselves (gRPC allows it once per
   call).
2. `TracingInterceptor` continues the caller's W3C trace in a SERVER span. In
   a process without a tracer provider (no collector configured) nothing would
   record the span, so it only makes the caller's trace context current: the
   handler's outgoing calls and stored traceparents still carry it.
3. `ErrorInterceptor` turns a `ConveyorError` into its status code with rich
   details, a lost or refused database connection into UNAVAILABLE
   (`DATABASE_UNAVAILABLE`: retry with backoff), and any other exception into a
   masked INTERNAL, inside the span so the span records the final code.

In grpc.aio, `await context.abort(...)` records code, message and trailing
metadata on the call and raises `AbortError` (an `Exception` subclass with no
public name) for the runtime to send; outer scopes read the outcome from
`context.code()` and must let that exception through.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from typing import Any

import grpc

# grpc.aio raises these from context.abort() and from a write on an ended call,
# and exports no public names for them.
from grpc._cython.cygrpc import (  # type: ignore[import-not-found]  # Cython module, no stubs
    AbortError,
    ExecuteBatchError,
)
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from conveyor_core.context import (
    CORRELATION_METADATA_KEY,
    correlation_id_var,
    get_correlation_id,
    is_valid_correlation_id,
    new_correlation_id,
)
from conveyor_core.db import is_unavailable
from conveyor_core.errors import ConveyorError, DatabaseUnavailable
from conveyor_core.grpc.status import internal_status, status_for_error
from conveyor_core.grpc.types import Context, Continuation, Handler

logger = logging.getLogger(__name__)
_tracer = trace.get_tracer(__name__)

Behavior = Callable[..., Any]
CallScope = Callable[[Context], AbstractAsyncContextManager[None]]

# Kubernetes probes and reflection clients poll these: a span per probe would
# bury the traces that matter.
UNTRACED_SERVICES = frozenset({"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"})

# Server-side codes that mean the server failed (OpenTelemetry gRPC semantic
# conventions); other non-OK codes are the caller's doing and leave the span
# status unset, though `rpc.grpc.status_code` always records the code.
SERVER_FAULT_CODES = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


def split_method(full_method: str) -> tuple[str, str]:
    """("pkg.Service", "Method") from "/pkg.Service/Method"."""
    service, _, method = full_method.lstrip("/").rpartition("/")
    return service, method


def metadata_value(metadata: Sequence[Any] | None, key: str) -> str | None:
    """The first text value of `key` in invocation metadata."""
    for entry_key, value in metadata or ():
        if entry_key == key and isinstance(value, str):
            return value
    return None


class _ScopedInterceptor(grpc.aio.ServerInterceptor):
    """Runs every call of every shape inside the async context manager `_scope`."""

    def _applies_to(self, method: str) -> bool:
        return True

    @abc.abstractmethod
    def _scope(
        self, call_details: grpc.HandlerCallDetails, context: Context
    ) -> AbstractAsyncContextManager[None]:
        """The context one call runs in (each interceptor's behaviour)."""

    async def intercept_service(
        self,
        continuation: Continuation,
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None or not self._applies_to(handler_call_details.method):
            return handler

        def scope(context: Context) -> AbstractAsyncContextManager[None]:
            return self._scope(handler_call_details, context)

        return wrap_handler(handler, scope)


#: Wraps a handler's behavior; told whether the requests and the responses are streamed.
BehaviorWrapper = Callable[[Behavior, bool, bool], Behavior]


def rewrap_handler(
    handler: Handler,
    wrap: BehaviorWrapper,
    request_deserializer: Callable[[bytes], Any] | None = None,
) -> Handler:
    """A handler of the same shape and codec whose behavior is `wrap(behavior, ...)`.

    `request_deserializer`, when given, replaces the handler's.
    """
    codec = {
        "request_deserializer": request_deserializer or handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(wrap(handler.unary_unary, False, False), **codec)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(
            wrap(handler.stream_unary, True, False), **codec
        )
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            wrap(handler.unary_stream, False, True), **codec
        )
    assert handler.stream_stream is not None  # a handler has exactly one of the four
    return grpc.stream_stream_rpc_method_handler(wrap(handler.stream_stream, True, True), **codec)


def wrap_handler(handler: Handler, scope: CallScope) -> Handler:
    """A handler of the same shape whose behavior runs inside `scope(context)`."""

    def wrap(behavior: Behavior, streamed_requests: bool, streamed_responses: bool) -> Behavior:
        if streamed_responses:
            return _stream_response(behavior, scope)
        return _unary_response(behavior, scope)

    return rewrap_handler(handler, wrap)


async def run_behavior(
    behavior: Behavior, request: Any, context: Context, streamed_responses: bool
) -> Any:
    """Run a handler's behavior to its end: its response, or all its responses written."""
    if streamed_responses:
        await _write_responses(behavior(request, context), context)
        return None
    response = behavior(request, context)
    return await response if inspect.isawaitable(response) else response


def _unary_response(behavior: Behavior, scope: CallScope) -> Behavior:
    async def scoped(request_or_iterator: Any, context: Context) -> Any:
        async with scope(context):
            return await run_behavior(behavior, request_or_iterator, context, False)

    return scoped


def _stream_response(behavior: Behavior, scope: CallScope) -> Behavior:
    # The wrapper writes the responses itself instead of being an async
    # generator: grpc.aio leaves a generator suspended at `yield` when the call
    # is cancelled, and the event loop later closes it in another context,
    # where the scopes' context-variable resets fail. A coroutine is cancelled
    # in place, inside the call's own task.
    async def scoped(request_or_iterator: Any, context: Context) -> None:
        async with scope(context):
            await run_behavior(behavior, request_or_iterator, context, True)

    return scoped


async def _write_responses(result: Any, context: Context) -> None:
    """Send what a streaming handler produced, in any of the styles grpc.aio accepts."""
    if inspect.isawaitable(result):  # a coroutine that calls context.write() itself
        await result
    elif hasattr(result, "__aiter__"):  # an async generator
        # Close the generator here, in the call's task, even when cancelled.
        closing = contextlib.aclosing(result) if hasattr(result, "aclose") else nullcontext()
        async with closing:
            async for response in result:
                await _write(context, response)
    else:  # a plain iterable
        for response in result:
            await _write(context, response)


async def _write(context: Context, response: Any) -> None:
    """Write one response; a write failing because the call ended is a cancellation.

    grpc.aio fails a write with `ExecuteBatchError` when the call is over,
    typically because the client cancelled while the write waited on flow
    control (a slow reader). That is the client's doing, not a server fault:
    it ends the handler as a cancelled call instead of a logged INTERNAL error.
    """
    try:
        await context.write(response)
    except ExecuteBatchError as error:
        raise asyncio.CancelledError("the call ended while a response was written") from error


class CorrelationInterceptor(_ScopedInterceptor):
    """Sets the call's correlation id (the caller's, or a new one it sends back)."""

    @asynccontextmanager
    async def _scope(
        self, call_details: grpc.HandlerCallDetails, context: Context
    ) -> AsyncIterator[None]:
        received = metadata_value(call_details.invocation_metadata, CORRELATION_METADATA_KEY)
        generated = received is None or not is_valid_correlation_id(received)
        if generated:
            correlation_id = new_correlation_id()
            if received is not None:
                logger.debug("replacing malformed correlation id from %s", context.peer())
        else:
            correlation_id = received  # type: ignore[assignment]
        token = correlation_id_var.set(correlation_id)
        try:
            if generated:  # the caller cannot know this id otherwise
                await context.send_initial_metadata(((CORRELATION_METADATA_KEY, correlation_id),))
            yield
        finally:
            correlation_id_var.reset(token)


class TracingInterceptor(_ScopedInterceptor):
    """Runs the call in a SERVER span that continues the caller's W3C trace context."""

    def __init__(self, untraced_services: frozenset[str] = UNTRACED_SERVICES) -> None:
        self._untraced_services = untraced_services

    def _applies_to(self, method: str) -> bool:
        return split_method(method)[0] not in self._untraced_services

    @asynccontextmanager
    async def _scope(
        self, call_details: grpc.HandlerCallDetails, context: Context
    ) -> AsyncIterator[None]:
        carrier = {
            key: value
            for key, value in call_details.invocation_metadata or ()
            if isinstance(value, str)
        }
        parent = propagate.extract(carrier)
        if not recording_spans():
            # Nothing would record a span: make the caller's trace current, as a
            # non-recording span would, without the cost of starting one.
            attached = otel_context.attach(parent)
            try:
                yield
            finally:
                otel_context.detach(attached)
            return
        service, method = split_method(call_details.method)
        with _tracer.start_as_current_span(
            f"{service}/{method}",
            context=parent,
            kind=SpanKind.SERVER,
            attributes=rpc_attributes(service, method),
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield
            except AbortError:
                record_server_status(span, context.code(), context.details())
                raise
            except BaseException as exc:  # cancellation, or an unmapped error
                code = _cancellation_code(context) if _is_cancellation(exc) else None
                record_server_status(span, code or grpc.StatusCode.UNKNOWN, repr(exc))
                raise
            else:
                record_server_status(span, context.code() or grpc.StatusCode.OK, None)


def recording_spans() -> bool:
    """Whether a tracer provider is installed (`conveyor_core.telemetry.configure_tracing`).

    Without one, the API hands out non-recording spans: starting them is pure cost.
    """
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def rpc_attributes(service: str, method: str) -> dict[str, str]:
    """Span attributes naming the call (OpenTelemetry RPC conventions) and correlation id."""
    attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}
    correlation_id = get_correlation_id()
    if correlation_id:
        attributes["conveyor.correlation_id"] = correlation_id
    return attributes


def record_server_status(
    span: trace.Span, code: grpc.StatusCode | None, details: str | bytes | None
) -> None:
    code = code or grpc.StatusCode.UNKNOWN
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code in SERVER_FAULT_CODES:
        description = details.decode() if isinstance(details, bytes) else details
        span.set_status(Status(StatusCode.ERROR, f"{code.name}: {description or ''}"))


def _is_cancellation(exc: BaseException) -> bool:
    return isinstance(exc, GeneratorExit | asyncio.CancelledError)


def _cancellation_code(context: Context) -> grpc.StatusCode:
    """Why the runtime cancelled the handler: its deadline passed, or the client gave up."""
    remaining = context.time_remaining()  # None: the call has no deadline
    if remaining is not None and remaining <= 0:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.CANCELLED


class ErrorInterceptor(_ScopedInterceptor):
    """Maps `ConveyorError` to its status with rich details; masks everything else as INTERNAL."""

    @asynccontextmanager
    async def _scope(
        self, call_details: grpc.HandlerCallDetails, context: Context
    ) -> AsyncIterator[None]:
        try:
            yield
        except AbortError:
            raise  # the handler chose its own status
        except ConveyorError as error:
            await self._abort_for_domain_error(call_details.method, context, error)
        except Exception as error:
            if is_unavailable(error):  # the database, not the code: the caller may retry
                logger.warning("%s: database unavailable: %r", call_details.method, error)
                await self._abort_for_domain_error(
                    call_details.method, context, DatabaseUnavailable()
                )
            else:
                await self._abort_internal(call_details.method, context, error)

    async def _abort_for_domain_error(
        self, method: str, context: Context, error: ConveyorError
    ) -> None:
        if error.code is grpc.StatusCode.INTERNAL:
            # A ConveyorError with no better code is a bug report, not an answer.
            return await self._abort_internal(method, context, error)
        logger.debug("%s failed: %s %s", method, error.code.name, error.message)
        status = status_for_error(error, get_correlation_id())
        await context.abort(status.code, status.details, status.trailing_metadata)

    async def _abort_internal(self, method: str, context: Context, error: Exception) -> None:
        correlation_id = get_correlation_id() or new_correlation_id()
        logger.error(
            "%s failed with an unexpected error (correlation id %s)",
            method,
            correlation_id,
            exc_info=error,
        )
        trace.get_current_span().record_exception(error)
        status = internal_status(correlation_id)
        await context.abort(status.code, status.details, status.trailing_metadata)


def server_interceptors() -> list[grpc.aio.ServerInterceptor]:
    """The interceptors every Conveyor server installs, outermost first."""
    return [CorrelationInterceptor(), TracingInterceptor(), ErrorInterceptor()]
