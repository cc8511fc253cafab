"""Persistence never fails a run; self-checks gate readiness; WatchRun streams a run to its end."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2
from sqlalchemy import text

from conveyor.common.v1 import job_pb2
from conveyor.executor.v1 import messages_pb2 as pb
from conveyor.queue.v1 import messages_pb2 as Q
from conveyor_core.runtime import Platform
from conveyor_core.settings import CoreSettings
from tests.helpers.executor import (
    ExecutorEnv,
    ScriptedRunner,
    command_invocation,
    executor_settings,
    poll,
)
from tests.helpers.queue import QueueEnv


async def _now(value: object) -> object:
    return value


async def test_a_database_lost_mid_run_does_not_fail_the_run_at_the_queue(
    executor: ExecutorEnv, scripted: ScriptedRunner
) -> None:
    order = await executor.submit(command_invocation("record"))
    await executor.wait_run(order, [pb.RUN_STATE_RUNNING])
    await poll(lambda: _now(order.id in scripted.started), bool)
    async with executor.service.engine_db.begin() as conn:
        for table in ("executor_steps", "executor_outputs", "executor_attempts", "executor_runs"):
            await conn.execute(text(f"DROP TABLE {table}"))
    scripted.gate.set()

    done = await executor.wait_order(order, [Q.WORK_ORDER_STATE_SUCCEEDED])
    result = job_pb2.JobResult.FromString(done.result.data)
    assert result.summary == "recorded nothing"  # the output could not be kept: ""
    assert result.run.endswith(order.id)


async def test_a_failed_self_check_keeps_readiness_not_serving(
    core: CoreSettings, queue: QueueEnv
) -> None:
    env = ExecutorEnv(core, queue, executor_settings(self_check_timeout_seconds=1))
    env.attach_queue = False
    env.queue_address_override = "127.0.0.1:1"  # nothing listens there
    with pytest.raises(Exception):  # noqa: B017 - any failure of the check will do
        await env.start()
    try:
        assert await env.readiness() == health_pb2.HealthCheckResponse.NOT_SERVING
        assert not env.service.pool.running
    finally:
        await env.stop()


async def test_the_platform_refuses_to_start_an_executor_whose_queue_is_unreachable(
    core: CoreSettings,
) -> None:
    dead = core.model_copy(update={"queue_address": "127.0.0.1:1"})
    platform = Platform(dead, ["executor"])
    with pytest.raises(grpc.aio.AioRpcError):
        await platform.start("127.0.0.1:0")


async def test_watch_run_streams_state_progress_and_steps_until_the_end(
    executor: ExecutorEnv, scripted: ScriptedRunner
) -> None:
    order = await executor.submit(command_invocation("record"))
    await executor.wait_run(order, [pb.RUN_STATE_RUNNING])
    updates = []
    async for update in executor.watch(order):
        updates.append(update)
        if len(updates) == 1:
            scripted.gate.set()  # the watcher is subscribed: let the run go on
    kinds = [u.WhichOneof("update") for u in updates]
    assert kinds[0] == "run" and updates[0].run.state == pb.RUN_STATE_RUNNING
    assert updates[-1].run.state == pb.RUN_STATE_SUCCEEDED
    progress = [u.progress for u in updates if u.HasField("progress")]
    assert [(p.percent, p.message) for p in progress] == [(75, "three quarters")]
    steps = [u.step for u in updates if u.HasField("step")]
    assert [s.display_name for s in steps] == ["lint"]
    assert kinds.index("progress") < kinds.index("step") < len(kinds) - 1


async def test_watching_a_finished_run_sends_it_once_and_ends(executor: ExecutorEnv) -> None:
    order = await executor.submit(command_invocation("ok"))
    await executor.wait_run(order, [pb.RUN_STATE_SUCCEEDED])
    updates = [u async for u in executor.watch(order)]
    assert [u.run.state for u in updates] == [pb.RUN_STATE_SUCCEEDED]
