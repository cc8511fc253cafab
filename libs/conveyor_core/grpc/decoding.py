"""Request bytes that do not decode are the caller's mistake: INVALID_ARGUMENT, not UNKNOWN.

grpc.aio deserializes a request before any interceptor or handler runs. When
the bytes are not a valid message (a string field holding invalid UTF-8, a
truncated varint, ...), the deserializer raises inside the runtime, which logs
an ERROR with a traceback and answers UNKNOWN, for every RPC of every service.

`DecodeInterceptor` replaces each handler's request deserializer by one that
never raises: bytes that do not decode become an `Undecodable` marker, and the
handler's behavior, before calling the servicer, raises `InvalidArgument` for
it. The `ErrorInterceptor` around it then answers INVALID_ARGUMENT with a
field violation (`request`) and logs one DEBUG line. For client-streaming
calls each message is checked as the servicer reads it.

It is installed innermost (after authentication), so an unauthenticated
caller still gets UNAUTHENTICATED, and the outer interceptors, which keep the
deserializer of the handler they wrap, hand this one on to the runtime.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from conveyor_core.errors import FieldViolation, InvalidArgument
from conveyor_core.grpc.interceptors import Behavior, rewrap_handler
from conveyor_core.grpc.types import Context, Continuation, Handler

#: Longest decoder message repeated in the field violation.
MAX_DECODE_MESSAGE_LENGTH = 200


class Undecodable:
    """What the lenient deserializer returns for bytes that are not a valid request."""

    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error

    def invalid_argument(self) -> InvalidArgument:
        message = f"{type(self.error).__name__}: {self.error}"[:MAX_DECODE_MESSAGE_LENGTH]
        return InvalidArgument(
            FieldViolation("request", f"the request bytes do not decode ({message})")
        )


def lenient(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    """`deserializer`, returning an `Undecodable` instead of raising."""

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as error:  # DecodeError, UnicodeDecodeError, ...
            return Undecodable(error)

    return deserialize


async def _checked(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        if isinstance(request, Undecodable):
            raise request.invalid_argument()
        yield request


def _wrap(behavior: Behavior, streamed_requests: bool, streamed_responses: bool) -> Behavior:
    if streamed_requests:
        return lambda requests, context: behavior(_checked(requests), context)

    def checked(request: Any, context: Context) -> Any:
        if isinstance(request, Undecodable):
            raise request.invalid_argument()
        return behavior(request, context)

    return checked


class DecodeInterceptor(grpc.aio.ServerInterceptor):
    """Answers INVALID_ARGUMENT for request bytes that do not decode (see the module doc)."""

    async def intercept_service(
        self,
        continuation: Continuation,
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        return rewrap_handler(handler, _wrap, lenient(handler.request_deserializer))
