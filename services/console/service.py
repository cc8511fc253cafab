"""The console as a hosted service: `conveyor serve console`, and part of `conveyor run`.

It has no gRPC API of its own (its registrations are empty; the process's gRPC server
still answers the standard health service). It serves HTTP on
CONVEYOR_CONSOLE_LISTEN_ADDRESS with uvicorn, in the process's event loop, and calls
the four services at the addresses the Platform passes to `attach_peers` (configured
CONVEYOR_*_ADDRESS, or this process when it hosts them). /healthz is liveness; /readyz
is ready once every peer's address is known, and not ready again once draining.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator, Mapping

import uvicorn

from conveyor_console.app import create_app
from conveyor_console.gateway import Gateway
from conveyor_console.settings import ConsoleSettings
from conveyor_core.clock import Clock
from conveyor_core.coordination import Coordination
from conveyor_core.grpc import ServiceRegistration
from conveyor_core.grpc.auth import channel_credentials
from conveyor_core.settings import CoreSettings, load

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """Uvicorn without its own signal handling: the Platform's handlers stop the process."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class ConsoleService:
    name = "console"

    def __init__(self, core: CoreSettings, settings: ConsoleSettings | None = None) -> None:
        self.core = core
        self.settings = settings or load(ConsoleSettings)
        self.gateway = Gateway(
            self.settings.call_timeout_seconds, credentials=channel_credentials(core)
        )
        self.app = create_app(self.settings, self.gateway)
        self.port = 0
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        host = self.settings.listen_address.rpartition(":")[0].strip("[]")
        if host in {"", "0.0.0.0", "::"}:
            host = "127.0.0.1"
        return f"http://{host}:{self.port}"

    def registrations(self) -> list[ServiceRegistration]:
        return []

    async def start(self) -> None:
        if self._task is not None:
            return
        host, _, port = self.settings.listen_address.rpartition(":")
        host = host.strip("[]")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, int(port)))
        except OSError as exc:
            sock.close()
            raise OSError(
                f"the console cannot listen on {self.settings.listen_address} "
                f"(CONVEYOR_CONSOLE_LISTEN_ADDRESS): {exc.strerror}"
            ) from exc
        sock.listen(128)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app, log_level="warning", lifespan="off", access_log=False, log_config=None
        )
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:  # binding is done; this is the app's start-up
            if self._task.done():
                self._task.result()
                raise RuntimeError("the console's HTTP server stopped while starting")
            await asyncio.sleep(0.01)
        log.info("console serving on %s", self.url)

    async def attach_peers(self, addresses: Mapping[str, str]) -> None:
        self.gateway.attach(addresses)
        if not self.gateway.ready:
            log.warning(
                "console: no address for %s (set CONVEYOR_%s_ADDRESS); /readyz says NOT_SERVING",
                ", ".join(self.gateway.missing()),
                "/".join(p.upper() for p in self.gateway.missing()),
            )

    async def self_check(self) -> None:
        return None

    async def drain(self) -> None:
        """On SIGTERM: /readyz turns NOT_SERVING so load balancers move on; pages and API
        calls still answer until the server stops."""
        self.gateway.draining = True

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._server = self._task = None
        await self.gateway.close()


def build(
    core: CoreSettings, coordination: Coordination, clock: Clock | None = None
) -> ConsoleService:
    return ConsoleService(core)
