"""The worker pool leases, runs, completes and fails work orders of a real queue."""

from __future__ import annotations

import asyncio

from conveyor.common.v1 import job_pb2, types_pb2
from conveyor.executor.v1 import messages_pb2 as pb
from conveyor.executor.v1 import service_pb2 as rpc
from conveyor.queue.v1 import messages_pb2 as queue_pb
from conveyor_core.settings import CoreSettings
from conveyor_executor.domain.invocation import JOB_RESULT_CONTENT_TYPE
from tests.helpers.executor import (
    ExecutorEnv,
    ScriptedRunner,
    command_invocation,
    executor_settings,
    invocation_payload,
    poll,
)
from tests.helpers.queue import QueueEnv

Q = queue_pb


async def test_a_leased_order_runs_and_completes_with_a_job_result(executor: ExecutorEnv) -> None:
    invocation = command_invocation(
        "ok", job="namespaces/test/jobs/nightly", job_version=3, fire_id="fire-1"
    )
    order = await executor.submit(invocation)
    done = await executor.wait_order(order, [Q.WORK_ORDER_STATE_SUCCEEDED])

    assert done.result.content_type == JOB_RESULT_CONTENT_TYPE
    result = job_pb2.JobResult.FromString(done.result.data)
    assert result.run == f"namespaces/test/runs/{order.id}"
    assert (result.work_found, result.summary) == (True, "all good")
    assert (result.input_tokens, result.output_tokens, result.cost_usd) == (10, 5, 0.01)

    run = await executor.wait_run(order, [pb.RUN_STATE_SUCCEEDED])
    assert run.kind == pb.RUN_KIND_COMMAND
    assert (run.job, run.job_version, run.fire_id) == ("namespaces/test/jobs/nightly", 3, "fire-1")
    assert run.work_order == order.name
    assert [(a.number, a.state) for a in run.attempts] == [(1, pb.RUN_STATE_SUCCEEDED)]
    assert run.attempts[0].executor == "executor-test"
    assert (run.usage.input_tokens, run.usage.output_tokens) == (10, 5)
    assert run.end_time.ToDatetime() >= run.start_time.ToDatetime()


async def test_a_retryable_failure_goes_back_to_the_queue_and_the_run_waits(
    executor: ExecutorEnv,
) -> None:
    order = await executor.submit(command_invocation("fail", "network", "true"))
    run = await executor.wait_run(order, [pb.RUN_STATE_PENDING])
    queued = await executor.queue.get(order.name)
    # The queue retries it later (backoff); the failure it holds is ours.
    assert queued.state in (Q.WORK_ORDER_STATE_QUEUED, Q.WORK_ORDER_STATE_LEASED)
    assert (queued.last_failure.type, queued.last_failure.retryable) == ("network", True)
    assert run.attempts[0].state == pb.RUN_STATE_FAILED
    assert (run.failure.type, run.failure.message) == ("network", "scripted network")


async def test_a_definite_failure_fails_the_order_and_the_run(executor: ExecutorEnv) -> None:
    order = await executor.submit(command_invocation("fail", "auth", "false"))
    failed = await executor.wait_order(order, [Q.WORK_ORDER_STATE_FAILED])
    assert (failed.last_failure.type, failed.last_failure.retryable) == ("auth", False)
    run = await executor.wait_run(order, [pb.RUN_STATE_FAILED])
    assert run.failure.type == "auth"
    assert not run.failure.retryable


async def test_a_crashing_runner_is_an_internal_retryable_failure(executor: ExecutorEnv) -> None:
    order = await executor.submit(command_invocation("crash"))
    run = await executor.wait_run(order, [pb.RUN_STATE_PENDING, pb.RUN_STATE_FAILED])
    assert run.failure.type == "internal"
    assert run.failure.retryable
    assert "scripted crash" in run.failure.message


async def test_a_payload_that_is_not_a_job_invocation_fails_for_good_as_invalid_input(
    executor: ExecutorEnv,
) -> None:
    wrong_type = await executor.submit(
        payload=types_pb2.Payload(data=b"{}", content_type="application/json")
    )
    undecodable = await executor.submit(
        payload=types_pb2.Payload(
            data=b"\xff\xff\xff",
            content_type=invocation_payload(job_pb2.JobInvocation()).content_type,
        )
    )
    workflow = await executor.submit(
        job_pb2.JobInvocation(
            target=job_pb2.JobTarget(workflow=job_pb2.WorkflowTarget(workflow="w", handler="h"))
        )
    )
    for order in (wrong_type, undecodable, workflow):
        failed = await executor.wait_order(order, [Q.WORK_ORDER_STATE_FAILED])
        assert failed.last_failure.type == "invalid_input"
        assert not failed.last_failure.retryable
        assert failed.attempt == 1  # never retried
    assert "application/json" in (await executor.queue.get(wrong_type.name)).last_failure.message
    run = await executor.wait_run(workflow, [pb.RUN_STATE_FAILED])
    assert run.kind == pb.RUN_KIND_WORKFLOW
    # An executor hosting no app cannot run a workflow, and says what to do.
    assert "hosts no Python app" in run.failure.message
    assert "conveyor worker" in run.failure.message


async def test_concurrency_is_bounded_and_leases_take_only_free_slots(
    core: CoreSettings, queue: QueueEnv, scripted: ScriptedRunner
) -> None:
    env = await ExecutorEnv(
        core, queue, executor_settings(concurrency=2), runners={"command": scripted}
    ).start()
    try:
        orders = [await env.submit(command_invocation("gate")) for _ in range(5)]
        await poll(lambda: _value(scripted.running), lambda n: n == 2)
        # Two run, three wait in the queue: the pool leased no more than it can run.
        leased = [await queue.get(o.name) for o in orders]
        assert sum(o.state == Q.WORK_ORDER_STATE_LEASED for o in leased) == 2
        scripted.gate.set()
        for order in orders:
            await env.wait_order(order, [Q.WORK_ORDER_STATE_SUCCEEDED])
        assert scripted.max_running == 2
    finally:
        await env.stop()


async def test_progress_goes_out_with_heartbeats_and_is_kept_on_the_run(
    executor: ExecutorEnv,
) -> None:
    order = await executor.submit(command_invocation("block"))
    leased = await executor.wait_order(order, [Q.WORK_ORDER_STATE_LEASED])
    seen = await poll(
        lambda: executor.queue.get(leased.name), lambda o: o.progress.message == "halfway"
    )
    assert seen.progress.percent == 50
    run = await poll(lambda: executor.get_run(order), lambda r: r.progress.message == "halfway")
    assert run.state == pb.RUN_STATE_RUNNING
    await executor.stub.AbortRun(_abort(order))
    await executor.wait_run(order, [pb.RUN_STATE_ABORTED])


def _abort(order: Q.WorkOrder) -> rpc.AbortRunRequest:
    return rpc.AbortRunRequest(name=f"namespaces/{order.namespace}/runs/{order.id}", reason="test")


async def _value(value: int) -> int:
    await asyncio.sleep(0)
    return value
