"""The `conveyor` command as a pod or a newcomer runs it: real processes, real signals."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conveyor.queue.v1 import service_pb2 as rpc
from conveyor.queue.v1 import service_pb2_grpc
from conveyor_queue.api.servicer import SERVICE_NAME as QUEUE_SERVICE
from tests.helpers.cli import cli_environment
from tests.helpers.cli import conveyor as operator_cli


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cli_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    return {**env, "CONVEYOR_LOG_LEVEL": "WARNING", **settings}


async def conveyor(*args: str, env: Mapping[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "conveyor_core.cli",
        *args,
        env=dict(env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def finished(*args: str, env: Mapping[str, str]) -> tuple[int, str]:
    process = await conveyor(*args, env=env)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, (out + err).decode()


async def serving(address: str, service: str, limit: float = 30) -> None:
    deadline = time.monotonic() + limit
    async with grpc.aio.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                reply = await health.Check(
                    health_pb2.HealthCheckRequest(service=service), timeout=1
                )
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            assert time.monotonic() < deadline, f"{service} not SERVING within {limit}s"
            await asyncio.sleep(0.1)


def scrape(port: int) -> str:
    """What Prometheus reads from a process's /metrics endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        return str(reply.read().decode())


@pytest.fixture
async def stopped_on_exit() -> AsyncIterator[list[asyncio.subprocess.Process]]:
    processes: list[asyncio.subprocess.Process] = []
    yield processes
    for process in processes:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_migrate_then_serve_one_service_and_stop_on_sigterm(
    make_postgres_database,
    redis_url: str,
    redis_prefix: str,  # type: ignore[no-untyped-def]
    stopped_on_exit: list[asyncio.subprocess.Process],
) -> None:
    url = await make_postgres_database()
    address = f"127.0.0.1:{free_port()}"
    env = cli_env(
        CONVEYOR_DATABASE_URL=url,
        CONVEYOR_REDIS_URL=redis_url,
        CONVEYOR_REDIS_KEY_PREFIX=redis_prefix,
        CONVEYOR_LISTEN_ADDRESS=address,
        CONVEYOR_MIGRATE_ON_START="false",
    )

    code, output = await finished("serve", "queue", env=env)  # not migrated yet: refused
    assert code == 1 and "not migrated" in output and "Traceback" not in output

    assert (await finished("migrate", "queue", "events", env=env))[0] == 0

    metrics_port = free_port()
    server = await conveyor(
        "serve", "queue", env={**env, "CONVEYOR_METRICS_PORT": str(metrics_port)}
    )
    stopped_on_exit.append(server)
    await serving(address, QUEUE_SERVICE)
    assert "# TYPE process_cpu_seconds_total" in await asyncio.to_thread(scrape, metrics_port)
    async with grpc.aio.insecure_channel(address) as channel:
        queue = service_pb2_grpc.WorkOrderQueueServiceStub(channel)
        reply = await queue.SubmitWorkOrder(
            rpc.SubmitWorkOrderRequest(parent="namespaces/cli/queues/jobs")
        )
        assert reply.work_order.name.startswith("namespaces/cli/queues/jobs/workOrders/")
    server.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(server.wait(), 30) == 0


async def test_bad_configuration_names_the_variable(tmp_path: Path) -> None:
    code, output = await finished(
        "serve", env=cli_env(CONVEYOR_LISTEN_ADDRESS="no-port", CONVEYOR_DATA_DIR=str(tmp_path))
    )
    assert code == 2 and "CONVEYOR_LISTEN_ADDRESS" in output and "Traceback" not in output


async def test_run_example_shows_an_order_and_its_journal(
    tmp_path: Path, stopped_on_exit: list[asyncio.subprocess.Process]
) -> None:
    """What `make run` does: the embedded default with every service and the example."""
    env = cli_env(
        CONVEYOR_DATA_DIR=str(tmp_path),
        CONVEYOR_LISTEN_ADDRESS=f"127.0.0.1:{free_port()}",
        CONVEYOR_CONSOLE_LISTEN_ADDRESS="127.0.0.1:0",
    )
    platform = await conveyor("run", "--example", env=env)
    stopped_on_exit.append(platform)
    assert platform.stdout is not None
    lines: list[str] = []
    while not any(line.startswith("[example] journal of") for line in lines):
        line = await asyncio.wait_for(platform.stdout.readline(), 60)
        assert line, f"the platform exited early: {lines}"
        lines.append(line.decode())
    assert any(line.startswith("[example] job namespaces/default/jobs/hello v") for line in lines)
    console = next(line for line in lines if line.startswith("  web console: http://127.0.0.1:"))
    url = console.split()[2]
    async with httpx.AsyncClient() as client:  # the banner's URL is the console, serving
        overview = await client.get(url, follow_redirects=True)
        queues = await client.get(f"{url}/api/v1/namespaces/default/queues")
    assert overview.status_code == 200 and "Overview" in overview.text
    assert queues.status_code == 200 and "queues" in queues.json()
    assert any(line.startswith("[example] run ") and "succeeded" in line for line in lines)
    trail = lines[-1].rstrip().split(": ", 1)[1].split(" -> ")
    assert trail[0] == "scheduler.schedule.fired"
    # The run's success is durable before the queue completes its order (docs/executor.md).
    assert trail[-2:] == ["executor.run.succeeded", "queue.work_order.succeeded"]
    assert {"queue.work_order.queued", "queue.work_order.leased", "executor.run.started"} <= set(
        trail
    )
    # The banner suggests what runs (not a submit to a queue nobody leases), and it does.
    banner = "".join(lines)
    assert "namespaces/demo" not in banner
    suggested = next(line for line in lines if "jobs run hello --watch" in line)
    args = suggested.split("#")[0].split()[1:]  # without "conveyor"
    address = env["CONVEYOR_LISTEN_ADDRESS"]
    user_env = {k: v for k, v in cli_environment(address).items() if k != "CONVEYOR_NAMESPACE"}
    ran = await operator_cli(address, *args, "-o", "json", env=user_env)
    assert ran.code == 0, ran
    assert "work orders run when submitted to namespace default, queues ['jobs'" in banner
    platform.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(platform.wait(), 30) == 0
    assert {name for name in os.listdir(tmp_path)} >= {
        "queue.db",
        "events.db",
        "scheduler.db",
        "executor.db",
    }
