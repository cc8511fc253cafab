"""The completion webhook against a real local HTTP server, in each failure mode."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from conveyor.common.v1 import job_pb2
from conveyor.executor.v1 import messages_pb2 as pb
from conveyor.executor.v1 import service_pb2 as rpc
from conveyor.queue.v1 import messages_pb2 as Q
from conveyor_core.settings import CoreSettings
from tests.helpers.executor import ExecutorEnv, ScriptedRunner, command_invocation, run_name
from tests.helpers.http_fake import HttpFake, Reply
from tests.helpers.queue import QueueEnv

MODE = job_pb2.IntegrationFailureMode


@pytest.fixture
def hook() -> Iterator[HttpFake]:
    with HttpFake() as fake:
        yield fake


def _with_webhook(url: str, mode: int, **headers: job_pb2.HeaderValue) -> job_pb2.JobInvocation:
    invocation = command_invocation("ok", job="namespaces/test/jobs/hooked")
    invocation.notification.CopyFrom(
        job_pb2.NotificationWebhook(url=url, failure_mode=mode, headers=headers)
    )
    return invocation


async def _steps(executor: ExecutorEnv, order: Q.WorkOrder) -> list[pb.RunStep]:
    response = await executor.stub.ListRunSteps(rpc.ListRunStepsRequest(parent=run_name(order)))
    return list(response.steps)


async def test_a_run_posts_its_summary_when_it_ends(executor: ExecutorEnv, hook: HttpFake) -> None:
    hook.route("POST", "/hook", Reply(204))
    invocation = _with_webhook(hook.url("/hook"), MODE.INTEGRATION_FAILURE_MODE_FAIL_FAST)
    order = await executor.submit(invocation)
    await executor.wait_order(order, [Q.WORK_ORDER_STATE_SUCCEEDED])
    [request] = hook.requests("/hook")
    body = json.loads(request.body)
    assert body["run"] == run_name(order)
    assert (body["succeeded"], body["summary"], body["job"]) == (
        True,
        "all good",
        "namespaces/test/jobs/hooked",
    )
    assert request.headers["content-type"] == "application/json"
    run = await executor.wait_run(order, [pb.RUN_STATE_SUCCEEDED])
    assert run.state == pb.RUN_STATE_SUCCEEDED
    [step] = await _steps(executor, order)
    assert (step.kind, step.status) == ("integration_call", "succeeded")


async def test_best_effort_records_a_failed_call_and_the_outcome_stands(
    executor: ExecutorEnv, hook: HttpFake
) -> None:
    hook.route("POST", "/hook", Reply(500))
    order = await executor.submit(
        _with_webhook(hook.url("/hook"), MODE.INTEGRATION_FAILURE_MODE_BEST_EFFORT)
    )
    await executor.wait_order(order, [Q.WORK_ORDER_STATE_SUCCEEDED])
    await executor.wait_run(order, [pb.RUN_STATE_SUCCEEDED])
    [step] = await _steps(executor, order)
    assert (step.kind, step.status) == ("integration_call", "failed")
    assert "HTTP 500" in step.failure.message


async def test_fail_fast_fails_the_run_with_the_calls_classified_error(
    executor: ExecutorEnv, hook: HttpFake
) -> None:
    hook.route("POST", "/hook", Reply(401))
    order = await executor.submit(
        _with_webhook(hook.url("/hook"), MODE.INTEGRATION_FAILURE_MODE_FAIL_FAST)
    )
    failed = await executor.wait_order(order, [Q.WORK_ORDER_STATE_FAILED])
    assert (failed.last_failure.type, failed.last_failure.retryable) == ("auth", False)
    run = await executor.wait_run(order, [pb.RUN_STATE_FAILED])
    assert "HTTP 401" in run.failure.message


async def test_a_disabled_webhook_is_never_called(executor: ExecutorEnv, hook: HttpFake) -> None:
    hook.route("POST", "/hook", Reply(200))
    order = await executor.submit(
        _with_webhook(hook.url("/hook"), MODE.INTEGRATION_FAILURE_MODE_DISABLED)
    )
    await executor.wait_run(order, [pb.RUN_STATE_SUCCEEDED])
    assert hook.requests("/hook") == []
    assert await _steps(executor, order) == []


async def test_secret_headers_are_resolved_and_never_recorded(
    core: CoreSettings, queue: QueueEnv, scripted: ScriptedRunner, hook: HttpFake
) -> None:
    hook.route("POST", "/hook", Reply(200))
    env = await ExecutorEnv(
        core,
        queue,
        runners={"command": scripted},
        environ={"CONVEYOR_SECRET_HOOK_TOKEN": "s3cret-value"},
    ).start()
    try:
        secret = job_pb2.HeaderValue(secret=job_pb2.SecretRef(name="hook-token"))
        order = await env.submit(
            _with_webhook(
                hook.url("/hook"), MODE.INTEGRATION_FAILURE_MODE_FAIL_FAST, **{"x-token": secret}
            )
        )
        await env.wait_run(order, [pb.RUN_STATE_SUCCEEDED])
        [request] = hook.requests("/hook")
        assert request.headers["x-token"] == "s3cret-value"
        [step] = await _steps(env, order)
        assert "s3cret-value" not in str(step)
    finally:
        await env.stop()
