"""A finished attempt's report survives a network partition from the queue (retried)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest

from conveyor.common.v1 import job_pb2
from conveyor.queue.v1 import messages_pb2 as Q
from conveyor_core.settings import CoreSettings
from tests.helpers.executor import (
    ExecutorEnv,
    ScriptedRunner,
    command_invocation,
    executor_settings,
    poll,
)
from tests.helpers.queue import QueueEnv
from tests.helpers.tcp_proxy import BlackholeProxy


@pytest.fixture
async def proxy(queue: QueueEnv) -> AsyncIterator[BlackholeProxy]:
    assert queue.platform is not None
    proxy = BlackholeProxy("127.0.0.1", queue.platform.port)
    await proxy.start()
    yield proxy
    await proxy.stop()


async def _now(value: object) -> object:
    return value


async def test_completion_is_retried_through_a_partition(
    core: CoreSettings,
    queue: QueueEnv,
    proxy: BlackholeProxy,
    scripted: ScriptedRunner,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = executor_settings(
        queue_call_timeout_seconds=0.5, queue_report_attempts=10, queue_report_backoff_seconds=0.05
    )
    env = ExecutorEnv(core, queue, settings, runners={"command": scripted})
    env.attach_queue = False
    await env.start()
    try:
        await env.service.attach_peers({"queue": f"127.0.0.1:{proxy.port}"})
        order = await env.submit(command_invocation("gate"))
        await poll(lambda: _now(order.id in scripted.started), bool)
        caplog.set_level(logging.WARNING, logger="conveyor_executor.queue_client")
        proxy.blackholed = True
        scripted.gate.set()
        await poll(
            lambda: _now(any("report failed" in r.getMessage() for r in caplog.records)), bool
        )
        proxy.blackholed = False
        done = await env.wait_order(order, [Q.WORK_ORDER_STATE_SUCCEEDED], within=20)
        assert job_pb2.JobResult.FromString(done.result.data).summary == "gate opened"
        assert done.attempt == 1  # completed by the first attempt, not re-run
    finally:
        await env.stop()
