"""gRPC server bootstrap: interceptors, health, reflection, graceful stop.

`create_server(address, services, settings)` builds a `grpc.aio` server with
Conveyor's interceptors (RED metrics per RPC from `conveyor_core.grpc.metrics`,
then `conveyor_core.grpc.interceptors`), the standard
`grpc.health.v1.Health` service and server reflection, binds it (port 0 picks
a free port) and returns a `GrpcServer` with the bound port.

Liveness vs readiness, both on the standard health service:

* Liveness is the overall service "": SERVING as soon as the process runs and
  answers. A Kubernetes liveness probe checks "" (`grpc: {port: ...}` with no
  `service`), so a process that is still warming up is not restarted.
* Readiness is per service: each registered service name starts NOT_SERVING
  and becomes SERVING when its owner calls `await server.set_serving(name,
  True)` after its own self-checks (database reachable, migrations applied).
  A readiness probe names the service (`grpc: {port: ..., service: <name>}`).

With `CONVEYOR_HEALTH_LISTEN_ADDRESS` set, the same health service is also
served, alone and in plaintext, on that address: Kubernetes' native gRPC
probes cannot speak TLS, so a server that requires TLS (or mTLS) on its main
port keeps its probes there. It stops after the main server.

Stopping (`stop()`, or SIGTERM/SIGINT after `install_signal_handlers`) first
turns every status, "" included, NOT_SERVING for good, then stops accepting
calls and lets in-flight ones finish for up to the grace period
(`settings.shutdown_grace_seconds`), cancelling what remains. The pod's
`terminationGracePeriodSeconds` must exceed that grace.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from conveyor_core.auth import Access, Authenticator, PrincipalsFileError
from conveyor_core.grpc.auth import AuthInterceptor, server_credentials
from conveyor_core.grpc.decoding import DecodeInterceptor
from conveyor_core.grpc.interceptors import server_interceptors
from conveyor_core.grpc.metrics import RpcMetricsInterceptor
from conveyor_core.settings import ConfigurationError, CoreSettings

logger = logging.getLogger(__name__)

OVERALL_HEALTH = ""
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
_SHUTDOWN_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@dataclass(frozen=True)
class ServiceRegistration:
    """One service to serve.

    Attributes:
        name: full proto service name, e.g. "conveyor.queue.v1.WorkOrderQueueService"
            (used for health and reflection).
        add_to_server: registers the servicer, e.g.
            `lambda server: add_WorkOrderQueueServiceServicer_to_server(servicer, server)`.
        access: per method name ("SubmitWorkOrder"), what a caller needs when
            authentication is on (`conveyor_core.auth.Access`); a method
            without a rule is refused then.
    """

    name: str
    add_to_server: Callable[[grpc.aio.Server], None]
    access: Mapping[str, Access] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        name: str,
        add_servicer: Callable[[Any, grpc.aio.Server], None],
        servicer: Any,
        access: Mapping[str, Access] | None = None,
    ) -> ServiceRegistration:
        """From a generated `add_<Service>Servicer_to_server` function and its servicer."""
        return cls(name, lambda server: add_servicer(servicer, server), dict(access or {}))


class GrpcServer:
    """A started-once, stopped-once gRPC server; build it with `create_server`."""

    def __init__(
        self,
        server: grpc.aio.Server,
        health_servicer: health.aio.HealthServicer,
        service_names: Sequence[str],
        port: int,
        settings: CoreSettings,
        health_server: grpc.aio.Server | None = None,
        health_port: int = 0,
    ) -> None:
        self._server = server
        #: Plaintext health-only server (`CONVEYOR_HEALTH_LISTEN_ADDRESS`), if any.
        self._health_server = health_server
        self.health_port = health_port
        self._health = health_servicer
        self._service_names = frozenset(service_names)
        self.port = port
        self._settings = settings
        self._start_task: asyncio.Future[None] | None = None
        self._stop_task: asyncio.Future[None] | None = None
        self._terminated = asyncio.Event()
        self._signal_loop: asyncio.AbstractEventLoop | None = None
        self._signal_stop_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start serving; a second call waits for the first. Raises after `stop()`."""
        if self._stop_task is not None:
            raise RuntimeError("a stopped GrpcServer cannot start again; create a new one")
        if self._start_task is None:
            self._start_task = asyncio.ensure_future(self._start_servers())
            logger.info("gRPC server listening on port %d", self.port)
        await asyncio.shield(self._start_task)

    async def _start_servers(self) -> None:
        await self._server.start()
        if self._health_server is not None:
            await self._health_server.start()
            logger.info("gRPC health (plaintext) listening on port %d", self.health_port)

    async def stop(self, grace: float | None = None) -> None:
        """Stop gracefully; later and concurrent calls wait for the first one to finish.

        Args:
            grace: seconds in-flight calls may take to finish before they are
                cancelled; None means `settings.shutdown_grace_seconds`.
        """
        if self._stop_task is None:
            if grace is None:
                grace = self._settings.shutdown_grace_seconds
            self._stop_task = asyncio.ensure_future(self._stop(grace))
        await asyncio.shield(self._stop_task)

    async def _stop(self, grace: float) -> None:
        logger.info("gRPC server on port %d stopping (grace %.1fs)", self.port, grace)
        await self._health.enter_graceful_shutdown()
        if self._start_task is not None:
            await self._start_task
        await self._server.stop(grace)
        if self._health_server is not None:  # probes saw NOT_SERVING throughout the drain
            await self._health_server.stop(0)
        self.remove_signal_handlers()
        self._terminated.set()
        logger.info("gRPC server on port %d stopped", self.port)

    async def set_serving(self, service_name: str, serving: bool) -> None:
        """Report a service ready (SERVING) or not; ignored once stopping.

        Args:
            service_name: a registered service name, or "" for the whole server.
            serving: True after the service's self-checks pass.

        Raises:
            ValueError: `service_name` is not served here.
        """
        if service_name != OVERALL_HEALTH and service_name not in self._service_names:
            raise ValueError(
                f"{service_name!r} is not served here; known: {sorted(self._service_names)}"
            )
        await self._health.set(service_name, _SERVING if serving else _NOT_SERVING)

    async def wait_for_termination(self) -> None:
        """Return once `stop()` (or a shutdown signal) has finished stopping the server."""
        await self._terminated.wait()

    def install_signal_handlers(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Make SIGTERM and SIGINT stop the server gracefully.

        The first signal starts `stop()` and uninstalls the handlers, so a second
        one gets the default behaviour (an impatient Ctrl-C still kills).
        """
        loop = loop or asyncio.get_running_loop()
        try:
            for signum in _SHUTDOWN_SIGNALS:
                loop.add_signal_handler(signum, self._on_shutdown_signal, signum)
        except NotImplementedError:  # Windows event loops
            logger.warning("signal handlers unsupported here; stop the server explicitly")
            return
        self._signal_loop = loop

    def remove_signal_handlers(self) -> None:
        """Undo `install_signal_handlers` (done automatically once stopped)."""
        loop, self._signal_loop = self._signal_loop, None
        if loop is not None and not loop.is_closed():
            for signum in _SHUTDOWN_SIGNALS:
                loop.remove_signal_handler(signum)

    def _on_shutdown_signal(self, signum: int) -> None:
        logger.info("received %s; stopping gracefully", signal.Signals(signum).name)
        loop = self._signal_loop
        self.remove_signal_handlers()
        if loop is not None:
            self._signal_stop_task = loop.create_task(self.stop())


async def create_server(
    address: str,
    services: Sequence[ServiceRegistration],
    settings: CoreSettings,
    *,
    credentials: grpc.ServerCredentials | None = None,
    authenticator: Authenticator | None = None,
) -> tuple[GrpcServer, int]:
    """Build and bind (but do not start) a server for `services`.

    Args:
        address: "host:port"; port 0 binds a free port.
        services: what to serve; each name starts NOT_SERVING in health.
        settings: message size limit, shutdown grace, TLS files and the
            principals file (`conveyor_core.grpc.auth`).
        credentials: TLS server credentials; None: from settings, else plaintext.
        authenticator: who may call; None: from `settings.auth_tokens_file`,
            and no authentication when that is empty.

    Returns:
        The server and the port it bound.

    Raises:
        ValueError: two registrations share a name.
        RuntimeError: the address cannot be bound.
        ConfigurationError: a TLS or principals file is unreadable or invalid.
    """
    names = [service.name for service in services]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate service names in {names}")
    # Outermost: RED metrics see the code the caller receives (grpc/metrics.py).
    interceptors: list[grpc.aio.ServerInterceptor] = [RpcMetricsInterceptor()]
    interceptors.extend(server_interceptors())
    if authenticator is None and settings.auth_enabled:
        authenticator = authenticator_from(settings)
    if authenticator is not None:
        rules = {
            f"/{service.name}/{method}": rule
            for service in services
            for method, rule in service.access.items()
        }
        interceptors.append(AuthInterceptor(authenticator, rules))
    # Innermost: undecodable request bytes answer INVALID_ARGUMENT, not UNKNOWN (decoding.py).
    interceptors.append(DecodeInterceptor())
    if credentials is None:
        credentials = server_credentials(settings)
    server = grpc.aio.server(interceptors=interceptors, options=_server_options(settings))
    for service in services:
        service.add_to_server(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in names:
        await health_servicer.set(name, _NOT_SERVING)
    reflection.enable_server_reflection(
        [*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    if credentials is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, credentials)
    health_server, health_port = None, 0
    if settings.health_listen_address:
        # Probes (the kubelet's gRPC probes speak plaintext) get the same health
        # servicer on a port of their own, with nothing else on it.
        health_server = grpc.aio.server(options=_server_options(settings))
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, health_server)
        health_port = health_server.add_insecure_port(settings.health_listen_address)
    grpc_server = GrpcServer(
        server, health_servicer, names, port, settings, health_server, health_port
    )
    return grpc_server, port


def authenticator_from(settings: CoreSettings) -> Authenticator:
    """The principals of `CONVEYOR_AUTH_TOKENS_FILE`; ConfigurationError when it is invalid."""
    try:
        return Authenticator(
            Path(settings.auth_tokens_file), reload_seconds=settings.auth_reload_seconds
        )
    except PrincipalsFileError as exc:
        raise ConfigurationError(f"CONVEYOR_AUTH_TOKENS_FILE: {exc}") from None


def _server_options(settings: CoreSettings) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_send_message_length", settings.grpc_max_message_bytes),
        ("grpc.max_receive_message_length", settings.grpc_max_message_bytes),
        # Fail loudly when the port is taken instead of silently sharing it
        # with another process.
        ("grpc.so_reuseport", 0),
    ]
