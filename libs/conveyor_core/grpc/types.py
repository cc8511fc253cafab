"""Type names for grpc.aio's generic classes, usable at run time too.

types-grpcio declares ServicerContext, RpcMethodHandler and the multi-callables
generic over the request and response messages; grpcio's classes cannot be
subscripted at run time. The interceptors handle every method: both are Any.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc

if TYPE_CHECKING:
    Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]
    Handler: TypeAlias = grpc.RpcMethodHandler[Any, Any]
    UnaryUnaryCallable: TypeAlias = grpc.aio.UnaryUnaryMultiCallable[Any, Any]
    UnaryStreamCallable: TypeAlias = grpc.aio.UnaryStreamMultiCallable[Any, Any]
    StreamUnaryCallable: TypeAlias = grpc.aio.StreamUnaryMultiCallable[Any, Any]
    StreamStreamCallable: TypeAlias = grpc.aio.StreamStreamMultiCallable[Any, Any]
else:
    Context = grpc.aio.ServicerContext
    Handler = grpc.RpcMethodHandler
    UnaryUnaryCallable = grpc.aio.UnaryUnaryMultiCallable
    UnaryStreamCallable = grpc.aio.UnaryStreamMultiCallable
    StreamUnaryCallable = grpc.aio.StreamUnaryMultiCallable
    StreamStreamCallable = grpc.aio.StreamStreamMultiCallable

#: What a server interceptor's intercept_service is handed to reach the next one.
Continuation: TypeAlias = "Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]]"
