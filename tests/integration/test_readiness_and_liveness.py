"""Readiness follows the database and Redis while running (with hysteresis), and liveness
fails when the event loop stops turning (conveyor_core.health)."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conveyor_core.grpc import create_channel
from conveyor_core.runtime import Platform
from conveyor_core.settings import CoreSettings
from conveyor_queue.api.servicer import SERVICE_NAME as QUEUE_SERVICE
from conveyor_scheduler.api.servicer import SERVICE_NAME as SCHEDULER_SERVICE
from tests.helpers.e2e import eventually
from tests.helpers.tcp_proxy import BlackholeProxy, through_proxy

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
QUICK = {
    "readiness_check_interval_seconds": 0.1,
    "readiness_check_timeout_seconds": 0.5,
    "readiness_failure_threshold": 2,
    "readiness_success_threshold": 2,
}


async def status(port: int, service: str) -> int:
    async with create_channel(f"127.0.0.1:{port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5
        )
        return int(reply.status)


async def becomes(port: int, service: str, wanted: int, what: str) -> None:
    async def reached() -> bool:
        return await status(port, service) == wanted

    await eventually(reached, what, 30)


@pytest.fixture
async def redis_proxy(redis_url: str) -> AsyncIterator[BlackholeProxy]:
    from redis.asyncio.connection import parse_url

    target = parse_url(redis_url)
    proxy = BlackholeProxy(target.get("host", "127.0.0.1"), int(target.get("port", 6379)))
    await proxy.start()
    yield proxy
    await proxy.stop()


async def test_readiness_follows_the_database_and_redis_and_comes_back(
    postgres_core: CoreSettings, postgres_proxy: BlackholeProxy, redis_proxy: BlackholeProxy
) -> None:
    core = postgres_core.model_copy(
        update={
            "database_url": through_proxy(postgres_core.database_url, postgres_proxy),
            "redis_url": f"redis://127.0.0.1:{redis_proxy.port}/0",
            "db_pool_size": 2,
            **QUICK,
        }
    )
    platform = Platform(core, ["queue"])
    port = await platform.start("127.0.0.1:0")
    try:
        assert await status(port, QUEUE_SERVICE) == SERVING

        await postgres_proxy.stop()  # pooled connections drop, new ones are refused
        await becomes(port, QUEUE_SERVICE, NOT_SERVING, "NOT_SERVING without the database")
        assert await status(port, "") == SERVING  # liveness is not readiness
        await postgres_proxy.start(postgres_proxy.port)
        await becomes(port, QUEUE_SERVICE, SERVING, "SERVING with the database back")

        redis_proxy.blackholed = True  # Redis silent: pings time out
        await becomes(port, QUEUE_SERVICE, NOT_SERVING, "NOT_SERVING without Redis")
        redis_proxy.blackholed = False
        await redis_proxy.stop()  # drop the connections that saw the silence
        await redis_proxy.start(redis_proxy.port)
        await becomes(port, QUEUE_SERVICE, SERVING, "SERVING with Redis back")
    finally:
        await platform.stop(grace=0)


async def test_the_schedulers_readiness_follows_its_queue(tmp_path: Path) -> None:
    """A scheduler whose queue does not answer cannot fire: it says so (and comes back)."""
    queue = Platform(CoreSettings(data_dir=tmp_path / "queue"), ["queue"])
    queue_port = await queue.start("127.0.0.1:0")
    proxy = BlackholeProxy("127.0.0.1", queue_port)
    await proxy.start()
    core = CoreSettings(
        data_dir=tmp_path / "scheduler", queue_address=f"127.0.0.1:{proxy.port}", **QUICK
    )
    scheduler = Platform(core, ["scheduler"])
    port = await scheduler.start("127.0.0.1:0")
    try:
        await becomes(port, SCHEDULER_SERVICE, SERVING, "SERVING with its queue")
        await proxy.stop()  # connections drop, new ones are refused
        await becomes(port, SCHEDULER_SERVICE, NOT_SERVING, "NOT_SERVING without its queue")
        await proxy.start(proxy.port)
        await becomes(port, SCHEDULER_SERVICE, SERVING, "SERVING with its queue back")
    finally:
        await scheduler.stop(grace=0)
        await proxy.stop()
        await queue.stop(grace=0)


async def test_a_stuck_event_loop_fails_liveness_and_logs_where_it_is_stuck(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    core = CoreSettings(data_dir=tmp_path, liveness_stall_seconds=0.5)
    platform = Platform(core, ["queue"])
    port = await platform.start("127.0.0.1:0")
    try:
        assert await status(port, "") == SERVING
        with caplog.at_level(logging.ERROR, logger="conveyor_core.health"):
            # The fault under test: code that blocks the loop (no await) for too long.
            block_the_loop_for(2.0)
            await becomes(port, "", NOT_SERVING, "liveness NOT_SERVING after the stall")
        [record] = [r for r in caplog.records if "event loop stuck" in r.getMessage()]
        assert "block_the_loop_for" in record.getMessage()  # the stack shows the culprit
        assert await status(port, QUEUE_SERVICE) == SERVING  # readiness is separate
    finally:
        await platform.stop(grace=0)


def block_the_loop_for(seconds: float) -> None:
    time.sleep(seconds)
