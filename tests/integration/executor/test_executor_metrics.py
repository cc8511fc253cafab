"""The executor's metrics (conveyor_executor.metrics): failures by error type, tokens and
cost by job, stalled runs (no progress for CONVEYOR_EXECUTOR_STALLED_RUN_SECONDS) and
handler runs blocked on a person."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from sqlalchemy import insert

from conveyor.common.v1 import types_pb2
from conveyor.executor.v1 import messages_pb2 as pb
from conveyor.queue.v1 import messages_pb2 as queue_pb
from conveyor_core.clock import to_micros
from conveyor_core.settings import CoreSettings
from conveyor_executor.store.tables import handler_runs
from tests.helpers.e2e import eventually
from tests.helpers.executor import (
    ExecutorEnv,
    ScriptedRunner,
    command_invocation,
    executor_settings,
)
from tests.helpers.metrics import metric_value
from tests.helpers.queue import NAMESPACE, QueueEnv

ONCE = types_pb2.RetryPolicy(maximum_attempts=1)


@pytest.fixture
async def stalling_executor(
    core: CoreSettings, queue: QueueEnv, scripted: ScriptedRunner
) -> AsyncIterator[ExecutorEnv]:
    env = await ExecutorEnv(
        core,
        queue,
        settings=executor_settings(stalled_run_seconds=0.3),
        runners={"command": scripted},
    ).start()
    yield env
    scripted.gate.set()
    await env.stop()


async def test_failures_by_error_type_and_tokens_and_cost_by_job(
    executor: ExecutorEnv, metric_reader: InMemoryMetricReader
) -> None:
    job = f"namespaces/{NAMESPACE}/jobs/j{uuid.uuid4().hex[:10]}"
    failures_before = metric_value(
        metric_reader, "conveyor.executor.failures", {"kind": "command", "error_type": "auth"}
    )
    ok = await executor.submit(command_invocation("ok", job=job))
    failed = await executor.submit(
        command_invocation("fail", "auth", "false", job=job), retry_policy=ONCE
    )
    await executor.wait_run(ok, [pb.RUN_STATE_SUCCEEDED])
    await executor.wait_run(failed, [pb.RUN_STATE_FAILED])

    def value(name: str, **labels: str) -> float:
        return metric_value(metric_reader, f"conveyor.executor.{name}", labels)

    assert value("tokens", job=job, direction="input") == 10
    assert value("tokens", job=job, direction="output") == 5
    assert value("cost_usd", job=job) == pytest.approx(0.01)
    after = value("failures", kind="command", error_type="auth")
    assert after - failures_before == 1


async def test_a_run_without_progress_counts_as_stalled_until_it_ends(
    stalling_executor: ExecutorEnv, scripted: ScriptedRunner, metric_reader: InMemoryMetricReader
) -> None:
    def stalled() -> float:
        return metric_value(metric_reader, "conveyor.executor.runs.stalled", {"kind": "command"})

    order = await stalling_executor.submit(command_invocation("gate"))
    await stalling_executor.wait_order(order, [queue_pb.WORK_ORDER_STATE_LEASED])

    async def counted() -> bool:
        return stalled() >= 1

    await eventually(counted, "the gated run counted as stalled", 20)
    scripted.gate.set()
    await stalling_executor.wait_run(order, [pb.RUN_STATE_SUCCEEDED])

    async def cleared() -> bool:
        return stalled() == 0

    await eventually(cleared, "no stalled run once it finished", 20)


async def test_suspended_handler_runs_are_reported_as_blocked(
    executor: ExecutorEnv, metric_reader: InMemoryMetricReader
) -> None:
    workflow = f"w{uuid.uuid4().hex[:10]}"
    service = executor.service
    now = to_micros(service.clock.now())
    row = {
        "namespace": NAMESPACE,
        "session_id": "s-1",
        "workflow": workflow,
        "handler": "charge",
        "kind": "consumer",
        "revision": 1,
        "queue": "jobs",
        "code_version": "v1",
        "topic": "orders",
        "events": "[]",
        "state_version": 0,
        "prompt": "",
        "input_tokens": 0,
        "output_tokens": 0,
        "cost_usd": 0.0,
        "events_published": 0,
        "created_at": now - 120_000_000,
        "updated_at": now - 60_000_000,
    }
    async with service.engine_db.begin() as conn:
        await conn.execute(
            insert(handler_runs),
            [
                row | {"handler_run_id": "hr-1", "phase": "SUSPENDED"},
                row | {"handler_run_id": "hr-2", "phase": "SUSPENDED", "updated_at": now},
                row | {"handler_run_id": "hr-3", "phase": "COMMITTED"},
            ],
        )
    await service.gauges.refresh()
    labels = {"namespace": NAMESPACE, "workflow": workflow}
    assert metric_value(metric_reader, "conveyor.executor.blocked_runs", labels) == 2
    age = metric_value(metric_reader, "conveyor.executor.blocked_oldest_age", labels)
    assert 60 <= age < 120
