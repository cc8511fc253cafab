"""What a benchmark run stands on: a scratch database and a service's server process.

Everything here is created by the run and removed at its end, on failure too:
the database `conveyor_bench_<run id>` (dropped), the Redis keys under the run's
prefix (deleted) and the server process (SIGTERM, then SIGKILL if it hangs).
The run id names this process (tests.helpers.leftovers): what a killed run
leaves behind is removed by the next run or test session on this machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from redis.asyncio import Redis
from sqlalchemy.engine import URL, make_url

from tests.helpers import leftovers

DEFAULT_ADMIN_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
QUEUE_SERVICE = "conveyor.queue.v1.WorkOrderQueueService"

#: Server settings a caller may pass through the environment to experiment
#: (e.g. CONVEYOR_DB_POOL_SIZE=20); every other CONVEYOR_* variable is dropped.
PASSTHROUGH_PREFIXES = (
    "CONVEYOR_QUEUE_",
    "CONVEYOR_EVENTS_",
    "CONVEYOR_DB_",
    "CONVEYOR_SCHEDULER_",
    "CONVEYOR_EXECUTOR_",
)


def admin_url() -> str:
    return os.environ.get("CONVEYOR_BENCH_POSTGRES_URL") or DEFAULT_ADMIN_URL


def redis_url() -> str:
    return os.environ.get("CONVEYOR_BENCH_REDIS_URL") or DEFAULT_REDIS_URL


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _connect(url: URL) -> asyncpg.Connection:
    return await asyncpg.connect(
        host=url.host or "127.0.0.1",
        port=url.port or 5432,
        user=url.username or "postgres",
        password=url.password,
        database=url.database or "postgres",
    )


@dataclass
class ScratchDatabase:
    """A fresh PostgreSQL database on the admin URL's server, dropped by `drop()`."""

    admin: str
    name: str = field(default_factory=lambda: f"conveyor_bench_{leftovers.current_run_id()}")
    created: bool = False

    @property
    def url(self) -> str:
        return make_url(self.admin).set(database=self.name).render_as_string(hide_password=False)

    async def create(self) -> None:
        conn = await _connect(make_url(self.admin))
        try:
            await conn.execute(f'CREATE DATABASE "{self.name}"')
            self.created = True
        finally:
            await conn.close()

    async def drop(self) -> None:
        if not self.created:
            return
        conn = await _connect(make_url(self.admin))
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            self.created = False
        finally:
            await conn.close()

    async def server_info(self) -> dict[str, str]:
        conn = await _connect(make_url(self.admin))
        try:
            info = {"version": await conn.fetchval("SHOW server_version")}
            for setting in ("synchronous_commit", "fsync", "shared_buffers", "max_connections"):
                info[setting] = await conn.fetchval(f"SHOW {setting}")
            return info
        finally:
            await conn.close()


async def delete_redis_prefix(url: str, prefix: str) -> int:
    """Delete every key under `prefix`; returns how many."""
    client = Redis.from_url(url)
    deleted = 0
    try:
        batch: list[bytes] = []
        async for key in client.scan_iter(match=_glob_escape(prefix) + "*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                deleted += await client.delete(*batch)
                batch = []
        if batch:
            deleted += await client.delete(*batch)
    finally:
        await client.aclose()
    return deleted


def _glob_escape(text: str) -> str:
    return "".join("\\" + char if char in "\\*?[]" else char for char in text)


class ServerProcess:
    """`python -m conveyor_core.cli serve <service>` in its own process, output to a log file.

    `health_service` is the gRPC service whose health `SERVING` means ready;
    `extra_env` (e.g. peers' addresses, tuned settings) is set last, over the
    caller's environment.
    """

    def __init__(
        self,
        database_url: str,
        redis: str,
        redis_prefix: str,
        log_path: Path,
        service: str = "queue",
        health_service: str = QUEUE_SERVICE,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.service = service
        self.health_service = health_service
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.log_path = log_path
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("CONVEYOR_") or k.startswith(PASSTHROUGH_PREFIXES)
        }
        self.passthrough = {k: v for k, v in env.items() if k.startswith("CONVEYOR_")}
        env.update(
            {
                "CONVEYOR_DATABASE_URL": database_url,
                "CONVEYOR_REDIS_URL": redis,
                "CONVEYOR_REDIS_KEY_PREFIX": redis_prefix,
                "CONVEYOR_LISTEN_ADDRESS": self.address,
                "CONVEYOR_LOG_LEVEL": "WARNING",
                "CONVEYOR_SHUTDOWN_GRACE_SECONDS": "5",
            }
        )
        env.update(extra_env or {})
        self._env = env
        self.command = [sys.executable, "-m", "conveyor_core.cli", "serve", service]
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.command,
                env=self._env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    async def wait_ready(self, limit: float = 60.0) -> float:
        """Wait for health SERVING of `health_service`; returns the seconds it took."""
        assert self.process is not None
        started = time.perf_counter()
        deadline = started + limit
        async with grpc.aio.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"{self.service} server exited with {self.process.returncode}:\n"
                        + self.log_tail()
                    )
                with contextlib.suppress(grpc.aio.AioRpcError):
                    reply = await stub.Check(
                        health_pb2.HealthCheckRequest(service=self.health_service), timeout=1.0
                    )
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return time.perf_counter() - started
                if time.perf_counter() > deadline:
                    raise RuntimeError(
                        f"{self.service} server not SERVING within {limit:.0f}s:\n{self.log_tail()}"
                    )
                await asyncio.sleep(0.1)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; returns the exit code."""
        process = self.process
        if process is None or process.poll() is not None:
            return None if process is None else process.returncode
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait()

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no server log)"
        return "\n".join(text.splitlines()[-lines:])
