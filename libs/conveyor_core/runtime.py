"""Hosting services in a process: one, several, or all four on one port (the embedded default).

A service package exposes `build(core, coordination, clock=None)` returning an
object with `name`, `registrations()`, `start()`, `self_check()` and `stop()`;
`SERVICES` maps service names to those factories. Adding a service is adding
a line here.

A service with an outbox may also have `attach_journal(address)`: when this
server hosts the JournalService itself (the embedded default) and
`CONVEYOR_JOURNAL_ADDRESS` is empty, the Platform calls it once the server
is up, with the server's own address, so the service's relay delivers there.

A service may also have `drain()`: `Platform.stop` calls it after readiness
turned NOT_SERVING and before the server stops, last started first (the
executor finishes or hands back its runs, the scheduler stops firing and
releases leadership, the queue flushes its journal outbox, while every service
in the same process still answers).

A service that calls other services (the scheduler calls the queue, the
executor the queue and the event store) has `attach_peers(addresses)`: once
the server is up the Platform passes, per peer in `PEERS`, the configured
address (`CONVEYOR_QUEUE_ADDRESS`, ...) or, when empty and the peer is hosted
in this process, the server's own address. A peer neither configured nor
hosted is absent from the mapping; the service decides whether it can run
without it.

With authentication on (`CONVEYOR_AUTH_TOKENS_FILE`) and no
`CONVEYOR_PEER_TOKEN`, the Platform makes a random internal token, accepted by
this process's server only, for the calls between the services it hosts: the
embedded default needs no token of its own. Peers in other processes need a
real `CONVEYOR_PEER_TOKEN`.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import logging
import signal
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from pydantic import SecretStr

from conveyor_core.auth import internal_principal, new_token
from conveyor_core.clock import Clock
from conveyor_core.coordination import Coordination, InProcessCoordination, RedisCoordination
from conveyor_core.grpc import GrpcServer, ServiceRegistration, create_server
from conveyor_core.grpc.server import OVERALL_HEALTH, authenticator_from
from conveyor_core.health import LoopWatchdog, ReadinessMonitor, Watched
from conveyor_core.outbox import JOURNAL_SERVICE
from conveyor_core.settings import CoreSettings

log = logging.getLogger(__name__)

SERVICES: dict[str, str] = {
    "queue": "conveyor_queue.service:build",
    "events": "conveyor_events.service:build",
    "scheduler": "conveyor_scheduler.service:build",
    "executor": "conveyor_executor.service:build",
    # The web console: HTTP on its own port, a client of the four services' gRPC APIs.
    "console": "conveyor_console.service:build",
}


#: What a Platform hosts unless told otherwise: the four gRPC services (the CLI's
#: `serve`/`run` add the console, which needs an HTTP port of its own).
GRPC_SERVICES: tuple[str, ...] = ("queue", "events", "scheduler", "executor")

# Peer service name -> the CoreSettings field holding its address.
PEERS: dict[str, str] = {
    "queue": "queue_address",
    "events": "events_address",
    "scheduler": "scheduler_address",
    "executor": "executor_address",
}


class HostedService(Protocol):
    name: str

    def registrations(self) -> list[ServiceRegistration]: ...
    async def start(self) -> None: ...
    async def self_check(self) -> None: ...
    async def stop(self) -> None: ...


def build_service(
    name: str,
    core: CoreSettings,
    coordination: Coordination,
    clock: Clock | None = None,
    hosting: Mapping[str, Any] | None = None,
) -> HostedService:
    """Build service `name`; `hosting` (the executor only) holds the user apps it hosts:
    {"apps": [conveyor.App, ...], "only_app_queues": bool}."""
    if name not in SERVICES:
        raise ValueError(f"unknown service {name!r}; known: {', '.join(SERVICES)}")
    module, _, factory = SERVICES[name].partition(":")
    extra = dict(hosting or {}) if name == "executor" else {}
    return getattr(importlib.import_module(module), factory)(  # type: ignore[no-any-return]
        core, coordination, clock=clock, **extra
    )


def coordination_from(core: CoreSettings) -> Coordination:
    if core.redis_url:
        return RedisCoordination(core.redis_url, core.redis_key_prefix)
    return InProcessCoordination()


class Platform:
    """Services sharing one gRPC server, one coordination backend and one clock."""

    def __init__(
        self,
        core: CoreSettings,
        names: Sequence[str] = GRPC_SERVICES,
        *,
        coordination: Coordination | None = None,
        clock: Clock | None = None,
        hosting: Mapping[str, Any] | None = None,
    ) -> None:
        self._internal_token: str | None = None
        if core.auth_enabled and not core.peer_token.get_secret_value():
            self._internal_token = new_token()
            core = core.model_copy(update={"peer_token": SecretStr(self._internal_token)})
        self.core = core
        self.coordination = coordination or coordination_from(core)
        self.services = [build_service(n, core, self.coordination, clock, hosting) for n in names]
        self.server: GrpcServer | None = None
        self.port = 0
        self._stopping: asyncio.Future[None] | None = None
        self._signal_task: asyncio.Task[None] | None = None
        self.readiness: ReadinessMonitor | None = None
        self.watchdog: LoopWatchdog | None = None

    def service(self, name: str) -> Any:
        return next(s for s in self.services if s.name == name)

    async def start(self, address: str | None = None) -> int:
        """Start coordination, every service, then the server; readiness after self-checks.

        If anything fails, what was started is stopped again before the error propagates.
        """
        try:
            return await self._start(address)
        except BaseException:
            await self.stop(grace=0)
            raise

    async def _start(self, address: str | None) -> int:
        await self.coordination.start()
        for service in self.services:
            await service.start()
        registrations = [r for s in self.services for r in s.registrations()]
        authenticator = None
        if self.core.auth_enabled:
            authenticator = authenticator_from(self.core)
            if self._internal_token is not None:
                authenticator.add_token(self._internal_token, internal_principal())
                self._warn_external_peers_without_token()
        self.server, self.port = await create_server(
            address or self.core.listen_address,
            registrations,
            self.core,
            authenticator=authenticator,
        )
        await self.server.start()
        if not self.core.auth_enabled and not _loopback(address or self.core.listen_address):
            log.warning(
                "serving on %s without authentication: anyone who reaches the port may call "
                "every RPC (set CONVEYOR_AUTH_TOKENS_FILE; docs/security.md)",
                address or self.core.listen_address,
            )
        await self.coordination.ping()
        for service in self.services:
            await service.self_check()
            for registration in service.registrations():
                await self.server.set_serving(registration.name, True)
        own_address = local_address(address or self.core.listen_address, self.port)
        if any(r.name == JOURNAL_SERVICE for r in registrations):
            await self._attach_journal(own_address)
        await self._attach_peers(own_address)
        self._start_health()
        return self.port

    def _start_health(self) -> None:
        """Readiness follows each service's dependencies; liveness follows the loop (health.py)."""
        assert self.server is not None
        server, core = self.server, self.core

        def check_of(service: HostedService) -> Callable[[], Awaitable[None]]:
            async def check() -> None:
                await self.coordination.ping()
                await service.self_check()

            return check

        self.readiness = ReadinessMonitor(
            [
                Watched(service.name, [r.name for r in service.registrations()], check_of(service))
                for service in self.services
            ],
            server.set_serving,
            core.readiness_check_interval_seconds,
            core.readiness_check_timeout_seconds,
            core.readiness_failure_threshold,
            core.readiness_success_threshold,
        )
        self.readiness.start()
        if core.liveness_stall_seconds > 0:

            async def stalled() -> None:
                await server.set_serving(OVERALL_HEALTH, False)

            self.watchdog = LoopWatchdog(core.liveness_stall_seconds, stalled)
            self.watchdog.start()

    def _warn_external_peers_without_token(self) -> None:
        configured = [getattr(self.core, field) for field in (*PEERS.values(), "journal_address")]
        if any(configured):
            log.warning(
                "CONVEYOR_PEER_TOKEN is empty: calls to peers at configured addresses (%s) "
                "carry only this process's internal token, which other servers refuse",
                ", ".join(a for a in configured if a),
            )

    async def _attach_peers(self, own_address: str) -> None:
        addresses = peer_addresses(self.core, {s.name for s in self.services}, own_address)
        for service in self.services:
            attach = getattr(service, "attach_peers", None)
            if attach is not None:
                await attach(addresses)

    async def _attach_journal(self, own_address: str) -> None:
        """Point outbox relays at the JournalService this server hosts, unless one is set."""
        if self.core.journal_address:
            return  # the services use the configured address themselves
        for service in self.services:
            attach = getattr(service, "attach_journal", None)
            if attach is not None:
                await attach(own_address)

    async def stop(self, grace: float | None = None) -> None:
        """Readiness NOT_SERVING, services' `drain()` (while every service still serves, so
        an executor can report its last runs to a queue in this process), then the server
        stops, then the services. Later and concurrent calls wait for the first one."""
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._stop(grace))
        await asyncio.shield(self._stopping)

    async def _stop(self, grace: float | None) -> None:
        if self.readiness is not None:  # it must not turn a stopping service SERVING again
            await self.readiness.stop()
        if self.watchdog is not None:
            await self.watchdog.stop()
        if self.server is not None:
            for service in self.services:
                for registration in service.registrations():
                    await self.server.set_serving(registration.name, False)
        for service in reversed(self.services):  # callers first: executor, scheduler, ...
            drain = getattr(service, "drain", None)
            if drain is not None:
                try:
                    await drain()
                except Exception:
                    log.exception("%s: drain failed; stopping anyway", service.name)
        if self.server is not None:
            await self.server.stop(self.core.shutdown_grace_seconds if grace is None else grace)
        for service in reversed(self.services):
            await service.stop()
        await self.coordination.stop()

    def install_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> None:
        """SIGTERM/SIGINT stop the whole platform (drain first), not just the server."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal, loop, signum)

    def _on_signal(self, loop: asyncio.AbstractEventLoop, signum: int) -> None:
        log.info("received %s; stopping gracefully", signal.Signals(signum).name)
        for other in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(other)  # a second signal gets the default behaviour
        self._signal_task = loop.create_task(self.stop())


def freeze_startup_heap() -> None:
    """Take everything allocated while starting (modules, protobuf descriptors, SQLAlchemy
    metadata, compiled statements) out of the cyclic garbage collector's full collections.

    A full (generation 2) collection walks every tracked object. In a queue server
    that is mostly what start-up made and never frees: measured during
    `tests.bench.run --only latency`, each one paused the event loop for 55-63 ms,
    which was the queue's submit-to-lease tail (max 55-137 ms, p99 up to 51 ms at
    200 orders/s, against 10-20 ms and 5-7 ms with the heap frozen). Reference
    counting still frees these objects; only cycles among them are never collected,
    so call this once per process, after start, not per request or per test.
    """
    gc.collect()
    gc.freeze()


def peer_addresses(core: CoreSettings, hosted: set[str], own_address: str) -> dict[str, str]:
    """Where each peer is reached: its configured address, else here if hosted here."""
    addresses = {}
    for peer, field in PEERS.items():
        configured = getattr(core, field)
        if configured:
            addresses[peer] = configured
        elif peer in hosted:
            addresses[peer] = own_address
    return addresses


def _loopback(listen_address: str) -> bool:
    host = listen_address.rpartition(":")[0].strip("[]")
    return host in {"127.0.0.1", "::1", "localhost"}


def local_address(listen_address: str, port: int) -> str:
    """The address a client in this process dials to reach a server bound to `listen_address`."""
    host = listen_address.rpartition(":")[0]
    if host in {"", "0.0.0.0", "::", "[::]"}:
        host = "127.0.0.1"
    return f"{host}:{port}"
