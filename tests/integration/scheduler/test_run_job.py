"""RunJob: a job's work order submitted now, outside its schedules, journaled once,
idempotent by request id; bad input and missing roles refused with nothing submitted.
Both backends (the `core` fixture)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from sqlalchemy import func, select

from conveyor.common.v1 import job_pb2, types_pb2
from conveyor.scheduler.v1 import service_pb2 as rpc
from conveyor.scheduler.v1 import service_pb2_grpc
from conveyor_core.grpc import create_channel, rich_error_details
from conveyor_core.settings import CoreSettings
from conveyor_scheduler.store.tables import journal_outbox
from tests.helpers.e2e import eventually
from tests.helpers.scheduler import NAMESPACE, SchedulerEnv, http_job
from tests.helpers.security import Principals

JOB = f"namespaces/{NAMESPACE}/jobs/job"


async def refused(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call  # type: ignore[misc]
    return raised.value


async def journaled_runs(env: SchedulerEnv) -> int:
    """scheduler.job.run records written to the scheduler's journal outbox."""
    async with env.service.engine_db.connect() as conn:
        statement = select(func.count()).where(journal_outbox.c.type == "scheduler.job.run")
        return int((await conn.execute(statement)).scalar_one())


async def test_run_job_submits_its_invocation_now_and_journals_it(env: SchedulerEnv) -> None:
    await env.create_job(job=http_job(2, queue="jobs", priority=3))
    payload = types_pb2.Payload(data=b'{"n": 1}', content_type="application/json")
    reply = await env.stub.RunJob(rpc.RunJobRequest(name=JOB, endpoints=["e1"], input=payload))
    assert reply.job_version == 1 and not reply.already_exists
    queue = f"namespaces/{NAMESPACE}/queues/jobs"
    assert reply.work_order == f"{queue}/workOrders/{reply.work_order_id}"

    [order] = await env.orders("jobs")
    assert order.name == reply.work_order and order.correlation_id == reply.correlation_id
    assert order.spec.priority == 3 and order.spec.labels["trigger"] == "run"
    invocation = job_pb2.JobInvocation.FromString(order.spec.payload.data)
    assert invocation.job == JOB and invocation.job_version == 1
    assert list(invocation.endpoints) == ["e1"] and not invocation.schedule
    assert json.loads(invocation.input.data) == {"n": 1}

    async def journaled() -> list[object] | None:
        records = await env.journal_records(type_prefix="scheduler.job.run")
        return records or None

    [record] = await eventually(journaled, "the run's journal record", 30)
    assert record.subjects["work_order"] == reply.work_order_id
    assert record.subjects["job"] == JOB and record.attributes["job_version"] == "1"
    assert record.correlation_id == reply.correlation_id

    # A pinned version runs that version's definition.
    updated = http_job(1, queue="jobs")
    updated.name = JOB
    await env.stub.UpdateJob(rpc.UpdateJobRequest(job=updated))
    old = await env.stub.RunJob(rpc.RunJobRequest(name=JOB, version=1))
    latest = await env.stub.RunJob(rpc.RunJobRequest(name=JOB))
    assert (old.job_version, latest.job_version) == (1, 2)
    assert old.work_order != latest.work_order, "no request id: a new run every call"


async def test_the_same_request_id_runs_once_and_journals_once(env: SchedulerEnv) -> None:
    await env.create_job(job=http_job(1, queue="jobs"))
    first = await env.stub.RunJob(rpc.RunJobRequest(name=JOB, request_id="deploy-42"))
    again = await env.stub.RunJob(rpc.RunJobRequest(name=JOB, request_id="deploy-42"))
    assert again.work_order == first.work_order and again.already_exists
    other = await env.stub.RunJob(rpc.RunJobRequest(name=JOB, request_id="deploy-43"))
    assert other.work_order != first.work_order
    assert len(await env.orders("jobs")) == 2
    assert await journaled_runs(env) == 2


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"name": "jobs/job"}, "name"),
        ({"name": "namespaces/test/jobs/Bad_Id"}, "name"),
        ({"name": JOB, "version": -1}, "version"),
        ({"name": JOB, "endpoints": ["e9"]}, "endpoints"),
        ({"name": JOB, "endpoints": ["e0", "e0"]}, "endpoints"),
        ({"name": JOB, "endpoints": ["E 0\n"]}, "endpoints[0]"),
        ({"name": JOB, "request_id": "has space"}, "request_id"),
        ({"name": JOB, "request_id": "x" * 129}, "request_id"),
        (
            {"name": JOB, "input": types_pb2.Payload(data=b"x" * (64 * 1024 + 1))},
            "input",
        ),
    ],
)
async def test_bad_input_is_invalid_argument_and_submits_nothing(
    env: SchedulerEnv, request_fields: dict[str, object], field: str
) -> None:
    await env.create_job(job=http_job(1, queue="jobs"))
    error = await refused(env.stub.RunJob(rpc.RunJobRequest(**request_fields)))  # type: ignore[arg-type]
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert field in [f for f, _ in rich_error_details(error).field_violations], error.details()
    assert await env.orders("jobs") == []


async def test_an_unknown_job_or_version_is_not_found(env: SchedulerEnv) -> None:
    error = await refused(env.stub.RunJob(rpc.RunJobRequest(name=JOB)))
    assert error.code() is grpc.StatusCode.NOT_FOUND
    assert rich_error_details(error).resource_name == JOB
    await env.create_job(job=http_job(1, queue="jobs"))
    error = await refused(env.stub.RunJob(rpc.RunJobRequest(name=JOB, version=7)))
    assert error.code() is grpc.StatusCode.NOT_FOUND
    assert await env.orders("jobs") == []


@pytest.fixture
async def secured(
    core: CoreSettings, tmp_path: Path, fast_scheduler: None
) -> AsyncIterator[tuple[SchedulerEnv, Principals]]:
    principals = Principals(tmp_path / "principals.json")
    settings = core.model_copy(update={"auth_tokens_file": str(principals.path)})
    root = principals.add("root", ["*"], ["admin"])
    env = SchedulerEnv(settings)
    await env.start()
    await env._channel.close()  # the env's own channel has no token: one with root's
    env._channel = create_channel(f"127.0.0.1:{env.port}", token=root)
    env.stub = service_pb2_grpc.SchedulerServiceStub(env._channel)
    env.queue = env.queue.__class__(env._channel)
    try:
        yield env, principals
    finally:
        await env.stop()


async def test_without_the_operator_role_or_namespace_it_is_permission_denied(
    secured: tuple[SchedulerEnv, Principals],
) -> None:
    env, principals = secured
    await env.create_job(job=http_job(1, queue="jobs"))
    viewer = principals.add("dashboard", [NAMESPACE], ["viewer"])
    foreign = principals.add("other-team", ["elsewhere"], ["operator"])
    for token, role in ((viewer, "operator"), (foreign, None)):
        async with create_channel(f"127.0.0.1:{env.port}", token=token) as channel:
            stub = service_pb2_grpc.SchedulerServiceStub(channel)
            error = await refused(stub.RunJob(rpc.RunJobRequest(name=JOB)))
        assert error.code() is grpc.StatusCode.PERMISSION_DENIED, error.details()
        if role:
            assert dict(rich_error_details(error).info)["required_role"] == role
    assert await env.orders("jobs") == []
    operator = principals.add("ops", [NAMESPACE], ["operator"])
    async with create_channel(f"127.0.0.1:{env.port}", token=operator) as channel:
        reply = await service_pb2_grpc.SchedulerServiceStub(channel).RunJob(
            rpc.RunJobRequest(name=JOB)
        )
    assert [o.name for o in await env.orders("jobs")] == [reply.work_order]
