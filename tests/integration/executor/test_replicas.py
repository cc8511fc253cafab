"""Two executor replicas on one database: abort and watch a run that runs on the other one."""

from __future__ import annotations

from conveyor.executor.v1 import messages_pb2 as pb
from conveyor.executor.v1 import service_pb2 as rpc
from conveyor.queue.v1 import messages_pb2 as Q
from conveyor_core.settings import CoreSettings
from tests.helpers.executor import (
    ExecutorEnv,
    ScriptedRunner,
    command_invocation,
    executor_settings,
    poll,
    run_name,
)
from tests.helpers.queue import QueueEnv


async def _now(value: object) -> object:
    return value


async def test_abort_run_on_another_replica_goes_through_the_queue_and_watch_follows_it(
    core: CoreSettings, executor: ExecutorEnv, queue: QueueEnv, scripted: ScriptedRunner
) -> None:
    order = await executor.submit(command_invocation("block"))
    await executor.wait_run(order, [pb.RUN_STATE_RUNNING])
    await poll(lambda: _now(order.id in scripted.started), bool)
    other = await ExecutorEnv(
        core,
        queue,
        executor_settings(worker_identity="executor-b", watch_poll_seconds=0.05),
        runners={"command": ScriptedRunner()},
    ).start()
    try:
        watch = other.watch(order)
        first = await anext(watch)
        assert first.run.state == pb.RUN_STATE_RUNNING
        await other.stub.AbortRun(rpc.AbortRunRequest(name=run_name(order), reason="from b"))
        rest = [update async for update in watch]
        assert rest[-1].run.state == pb.RUN_STATE_ABORTED
        cancelled = await other.wait_order(order, [Q.WORK_ORDER_STATE_CANCELLED])
        assert cancelled.attempt == 1
        run = await other.get_run(order)
        assert [a.executor for a in run.attempts] == ["executor-test"]
    finally:
        await other.stop()
