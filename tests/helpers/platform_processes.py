"""The platform as Kubernetes runs it: one `conveyor serve <service>` process per service.

Each process gets its own gRPC port and Prometheus `/metrics` port, the peers'
addresses and the caller's extra environment; stderr is read continuously
(so a chatty process never blocks on a full pipe) and kept for assertions::

    platform = await PlatformProcesses.start(env)   # events, queue, scheduler, executor
    text = platform.scrape("queue")                  # what Prometheus reads
    await platform.stop()                            # SIGTERM each, wait
    platform.logs("executor")                        # its stderr lines
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conveyor_events.api.servicer import SERVICE_NAME as EVENTS_SERVICE
from conveyor_executor.api.servicer import SERVICE_NAME as EXECUTOR_SERVICE
from conveyor_queue.api.servicer import SERVICE_NAME as QUEUE_SERVICE
from conveyor_scheduler.api.servicer import SERVICE_NAME as SCHEDULER_SERVICE
from tests.helpers import services
from tests.helpers.polling import eventually

#: Start order: each service's peers are up before it.
ORDER = ("events", "queue", "scheduler", "executor")
HEALTH_NAMES = {
    "events": EVENTS_SERVICE,
    "queue": QUEUE_SERVICE,
    "scheduler": SCHEDULER_SERVICE,
    "executor": EXECUTOR_SERVICE,
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def base_environment(**settings: str) -> dict[str, str]:
    """This process's environment without CONVEYOR_* variables, plus `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    pool = str(services.TEST_DB_POOL_SIZE)
    return {**env, "CONVEYOR_LOG_LEVEL": "INFO", "CONVEYOR_DB_POOL_SIZE": pool, **settings}


def scrape(port: int) -> str:
    """What Prometheus reads from a process's /metrics endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        return str(reply.read().decode())


async def health_status(address: str, service: str, limit: float = 2) -> int | None:
    """The health status of `service` at `address`; None when the call fails."""
    async with grpc.aio.insecure_channel(address) as channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=limit
            )
        except grpc.aio.AioRpcError:
            return None
        return int(reply.status)


@dataclass
class ServiceProcess:
    name: str
    process: asyncio.subprocess.Process
    address: str
    metrics_port: int
    lines: list[str] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    async def read_stderr(self) -> None:
        assert self.process.stderr is not None
        while line := await self.process.stderr.readline():
            self.lines.append(line.decode(errors="replace").rstrip("\n"))


@dataclass
class PlatformProcesses:
    services: dict[str, ServiceProcess] = field(default_factory=dict)

    @classmethod
    async def start(
        cls, env: Mapping[str, str], names: tuple[str, ...] = ORDER, ready_limit: float = 60
    ) -> PlatformProcesses:
        """Start `names` in order, each SERVING before the next starts; stop all on failure."""
        platform = cls()
        peers: dict[str, str] = {}
        try:
            for name in names:
                address = f"127.0.0.1:{free_port()}"
                metrics_port = free_port()
                settings = {
                    **env,
                    **peers,
                    "CONVEYOR_LISTEN_ADDRESS": address,
                    "CONVEYOR_METRICS_PORT": str(metrics_port),
                    "CONVEYOR_METRICS_HOST": "127.0.0.1",
                }
                process = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "conveyor_core.cli",
                    "serve",
                    name,
                    env=settings,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.PIPE,
                )
                service = ServiceProcess(name, process, address, metrics_port)
                service.reader = asyncio.create_task(service.read_stderr())
                platform.services[name] = service
                await platform.wait_serving(name, ready_limit)
                peers.update(_peer_settings(name, address))
        except BaseException:
            await platform.stop()
            raise
        return platform

    async def wait_serving(self, name: str, limit: float = 60) -> None:
        service = self.services[name]
        serving = 1  # health_pb2.HealthCheckResponse.SERVING

        async def up() -> bool:
            if service.process.returncode is not None:
                raise AssertionError(f"{name} exited early: {self.logs(name)[-20:]}")
            return await health_status(service.address, HEALTH_NAMES[name]) == serving

        await eventually(up, f"{name} SERVING", limit, every=0.1)

    def address(self, name: str) -> str:
        return self.services[name].address

    def scrape(self, name: str) -> str:
        return scrape(self.services[name].metrics_port)

    def logs(self, name: str) -> list[str]:
        return list(self.services[name].lines)

    async def stop_one(self, name: str, limit: float = 60) -> tuple[int | None, float]:
        """SIGTERM `name`; its exit code and how long it took to exit."""
        service = self.services[name]
        started = time.monotonic()
        if service.process.returncode is None:
            service.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(service.process.wait(), limit)
            except TimeoutError:
                service.process.kill()
                await service.process.wait()
        if service.reader is not None:
            await service.reader
        return service.process.returncode, time.monotonic() - started

    async def stop(self) -> dict[str, tuple[int | None, float]]:
        """Stop callers first (executor, scheduler, queue, events)."""
        return {name: await self.stop_one(name) for name in reversed(list(self.services))}


def _peer_settings(name: str, address: str) -> dict[str, str]:
    if name == "events":
        return {"CONVEYOR_EVENTS_ADDRESS": address, "CONVEYOR_JOURNAL_ADDRESS": address}
    return {f"CONVEYOR_{name.upper()}_ADDRESS": address}
