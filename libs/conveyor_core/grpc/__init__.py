"""gRPC bootstrap shared by every Conveyor service: server, client channel, interceptors.

Example:
    >>> server, port = await create_server(
    ...     "0.0.0.0:50051",
    ...     [ServiceRegistration(SERVICE_NAME, lambda s: add_Servicer_to_server(servicer, s))],
    ...     settings,
    ... )
    >>> await server.start()
    >>> await server.set_serving(SERVICE_NAME, True)  # after self-checks
    >>> server.install_signal_handlers(asyncio.get_running_loop())
    >>> await server.wait_for_termination()
"""

from conveyor_core.grpc.client import client_interceptors, create_channel
from conveyor_core.grpc.interceptors import (
    CorrelationInterceptor,
    ErrorInterceptor,
    TracingInterceptor,
    server_interceptors,
)
from conveyor_core.grpc.server import GrpcServer, ServiceRegistration, create_server
from conveyor_core.grpc.status import (
    ERROR_DOMAIN,
    RichError,
    internal_status,
    rich_error_details,
    status_for_error,
)

__all__ = [
    "ERROR_DOMAIN",
    "CorrelationInterceptor",
    "ErrorInterceptor",
    "GrpcServer",
    "RichError",
    "ServiceRegistration",
    "TracingInterceptor",
    "client_interceptors",
    "create_channel",
    "create_server",
    "internal_status",
    "rich_error_details",
    "server_interceptors",
    "status_for_error",
]
