"""Abort (AbortRun, a queue cancel), lost leases, and the SIGTERM drain."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from conveyor.common.v1 import types_pb2
from conveyor.executor.v1 import messages_pb2 as pb
from conveyor.executor.v1 import service_pb2 as rpc
from conveyor.queue.v1 import messages_pb2 as Q
from conveyor.queue.v1 import service_pb2 as queue_rpc
from conveyor_core.settings import CoreSettings
from conveyor_executor.domain.model import RunRef
from tests.helpers.executor import (
    ExecutorEnv,
    ScriptedRunner,
    command_invocation,
    executor_settings,
    poll,
    run_name,
)
from tests.helpers.queue import QueueEnv


async def _running(executor: ExecutorEnv, scripted: ScriptedRunner, *argv: str) -> Q.WorkOrder:
    order = await executor.submit(command_invocation(*argv))
    await executor.wait_run(order, [pb.RUN_STATE_RUNNING])
    await poll(lambda: _now(order.id in scripted.started), bool)
    return order


async def _now(value: object) -> object:
    return value


async def test_abort_run_stops_a_long_run_promptly_and_records_it_aborted(
    executor: ExecutorEnv, scripted: ScriptedRunner
) -> None:
    order = await _running(executor, scripted, "block")
    response = await executor.stub.AbortRun(
        rpc.AbortRunRequest(name=run_name(order), reason="operator said stop")
    )
    assert response.run.name == run_name(order)
    run = await executor.wait_run(order, [pb.RUN_STATE_ABORTED], within=5)
    # Promptly: the runner stopped on the abort signal itself, not cancelled once
    # the abort grace ran out (test_a_runner_ignoring_the_abort_is_cancelled_after_the_grace).
    assert scripted.cancelled_tasks == 0
    assert run.failure.type == "aborted"
    assert "operator said stop" in run.failure.message
    assert not run.failure.retryable
    assert [a.state for a in run.attempts] == [pb.RUN_STATE_ABORTED]
    failed = await executor.wait_order(order, [Q.WORK_ORDER_STATE_FAILED])
    assert failed.last_failure.type == "aborted"  # not retried


async def test_a_cancel_seen_on_heartbeat_aborts_the_run_and_the_order_ends_cancelled(
    executor: ExecutorEnv, scripted: ScriptedRunner
) -> None:
    order = await _running(executor, scripted, "block")
    await executor.queue.stub.CancelWorkOrder(
        queue_rpc.CancelWorkOrderRequest(name=order.name, reason="not needed")
    )
    await executor.wait_order(order, [Q.WORK_ORDER_STATE_CANCELLED], within=5)
    run = await executor.wait_run(order, [pb.RUN_STATE_ABORTED], within=5)
    assert run.failure.type == "aborted"


async def test_a_runner_ignoring_the_abort_is_cancelled_after_the_grace(
    core: CoreSettings, queue: QueueEnv, scripted: ScriptedRunner
) -> None:
    env = await ExecutorEnv(
        core, queue, executor_settings(abort_grace_seconds=0.2), runners={"command": scripted}
    ).start()
    try:
        order = await _running(env, scripted, "stubborn")
        await env.stub.AbortRun(rpc.AbortRunRequest(name=run_name(order)))
        run = await env.wait_run(order, [pb.RUN_STATE_ABORTED], within=5)
        assert scripted.cancelled_tasks == 1
        assert run.failure.type == "aborted"
    finally:
        await env.stop()


async def test_aborting_a_finished_run_is_a_failed_precondition(executor: ExecutorEnv) -> None:
    order = await executor.submit(command_invocation("ok"))
    await executor.wait_run(order, [pb.RUN_STATE_SUCCEEDED])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await executor.stub.AbortRun(rpc.AbortRunRequest(name=run_name(order)))
    assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "SUCCEEDED" in (caught.value.details() or "")


async def test_a_lost_lease_stops_the_run_and_reports_nothing_to_the_queue(
    executor: ExecutorEnv, queue: QueueEnv, scripted: ScriptedRunner
) -> None:
    order = await _running(executor, scripted, "block")
    # The lease runs out on the queue's clock: the order goes back to the queue
    # and the executor's next heartbeat is refused with FAILED_PRECONDITION.
    queue.clock.advance(3600)
    await queue.sweep()
    run = await poll(
        lambda: executor.get_run(order),
        lambda r: r.attempts and r.attempts[0].state == pb.RUN_STATE_FAILED,
        within=5,
    )
    first = run.attempts[0]
    assert first.failure.type == "internal"
    assert "lease lost" in first.failure.message
    assert first.failure.retryable
    assert run.state == pb.RUN_STATE_PENDING
    now = await queue.get(order.name)
    # The executor reported nothing for an order that is no longer its own.
    assert now.last_timeout_kind == Q.TIMEOUT_KIND_LEASE_EXPIRED
    assert "lease lost" not in now.last_failure.message


async def test_stop_lets_a_run_finish_within_the_drain_timeout(
    core: CoreSettings, queue: QueueEnv, scripted: ScriptedRunner
) -> None:
    # A drain timeout no slow machine reaches: the run is let finish, and stop()
    # returns when it has, not when the timeout passes.
    env = await ExecutorEnv(
        core, queue, executor_settings(drain_timeout_seconds=60), runners={"command": scripted}
    ).start()
    finishing = await env.submit(command_invocation("gate"))
    await poll(lambda: _now(finishing.id in scripted.started), bool)

    stopping = asyncio.create_task(env.stop())
    await poll(lambda: _now(env.service.pool.running), lambda running: not running)
    scripted.gate.set()  # finishes while stop() drains
    await asyncio.wait_for(stopping, 30)

    assert (await queue.get(finishing.name)).state == Q.WORK_ORDER_STATE_SUCCEEDED


async def test_stop_hands_over_runs_still_going_after_the_drain_timeout_retryable(
    core: CoreSettings, queue: QueueEnv, scripted: ScriptedRunner
) -> None:
    env = await ExecutorEnv(
        core, queue, executor_settings(drain_timeout_seconds=0.5), runners={"command": scripted}
    ).start()
    stuck = await _running(env, scripted, "block")  # never finishes on its own
    await env.stop()

    handed_over = await queue.get(stuck.name)
    assert handed_over.state == Q.WORK_ORDER_STATE_QUEUED  # another executor takes it
    assert handed_over.last_failure.type == "internal"
    assert handed_over.last_failure.retryable
    assert "shutting down" in handed_over.last_failure.message
    run = await env.service.store.run_get(_ref(stuck))  # reopens the stopped service's pool,
    await env.service.engine_db.dispose()  # so close it again
    assert run.state.value == "PENDING"
    assert run.attempts[0].error is not None and run.attempts[0].error.retryable


def _ref(order: Q.WorkOrder) -> RunRef:
    return RunRef(order.namespace, order.id)


async def test_aborting_a_run_waiting_for_its_retry_cancels_the_order_and_ends_the_run(
    executor: ExecutorEnv,
) -> None:
    # A long backoff keeps the failed order waiting in the queue, held by nobody.
    policy = types_pb2.RetryPolicy(maximum_attempts=5)
    policy.initial_interval.FromSeconds(3600)
    order = await executor.submit(
        command_invocation("fail", "network", "true"), retry_policy=policy
    )
    await executor.wait_run(order, [pb.RUN_STATE_PENDING])
    response = await executor.stub.AbortRun(
        rpc.AbortRunRequest(name=run_name(order), reason="give up")
    )
    assert response.run.state == pb.RUN_STATE_ABORTED
    assert response.run.failure.type == "aborted"
    assert (await executor.queue.get(order.name)).state == Q.WORK_ORDER_STATE_CANCELLED
