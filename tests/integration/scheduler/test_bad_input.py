"""Bad input gets INVALID_ARGUMENT with field violations (or NOT_FOUND, ALREADY_EXISTS, ABORTED)."""

from __future__ import annotations

import grpc
import pytest

from conveyor.common.v1 import job_pb2, types_pb2
from conveyor.scheduler.v1 import messages_pb2 as pb
from conveyor.scheduler.v1 import service_pb2 as rpc
from conveyor_core.grpc import rich_error_details
from tests.helpers.scheduler import SchedulerEnv, cron, http_job, interval, seconds

JOB = "namespaces/test/jobs/job"


def _secret_literal() -> pb.Job:
    job = http_job()
    job.target.http.endpoints[0].headers["Authorization"].value = "Bearer hunter2"
    return job


def _cycle() -> pb.Job:
    job = http_job(2)
    job.target.http.endpoints[0].depends_on.append("e1")
    job.target.http.endpoints[1].depends_on.append("e0")
    return job


def _oversize() -> pb.Job:
    job = http_job()
    job.target.http.endpoints[0].body.data = b"x" * (64 * 1024 + 1)
    return job


BAD_JOBS = {
    "no target": (pb.Job(), "job.target"),
    "too many endpoints": (http_job(33), "job.target.http.endpoints"),
    "oversize definition": (_oversize(), "job"),
    "bad url": (
        pb.Job(
            target=job_pb2.JobTarget(
                http=job_pb2.HttpTarget(
                    endpoints=[job_pb2.HttpEndpoint(name="a", method="GET", url="ftp://x")]
                )
            )
        ),
        "job.target.http.endpoints[0].url",
    ),
    "bad method": (
        pb.Job(
            target=job_pb2.JobTarget(
                http=job_pb2.HttpTarget(
                    endpoints=[job_pb2.HttpEndpoint(name="a", method="BREW", url="http://x")]
                )
            )
        ),
        "job.target.http.endpoints[0].method",
    ),
    "secret header given as a value": (
        _secret_literal(),
        "job.target.http.endpoints[0].headers[Authorization]",
    ),
    "dependency cycle": (_cycle(), "job.target.http.endpoints"),
    "bad retry policy": (
        http_job(retry_policy=types_pb2.RetryPolicy(jitter=2)),
        "job.retry_policy.jitter",
    ),
    "command without argv": (
        pb.Job(target=job_pb2.JobTarget(command=job_pb2.CommandTarget())),
        "job.target.command.argv",
    ),
}


def _past():  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    from tests.helpers.scheduler import timestamp

    return timestamp(datetime(2020, 1, 1, tzinfo=UTC))


BAD_SCHEDULES = {
    "invalid cron": (cron("61 * * * *"), "schedule.cron.expression"),
    "unknown time zone": (cron("30 2 * * *", "Mars/Olympus"), "schedule.cron.time_zone"),
    "interval below the minimum": (interval(0.5), "schedule.interval.every"),
    "no spec": (pb.Schedule(), "schedule"),
    "negative jitter": (interval(60, jitter=seconds(-1)), "schedule.jitter"),
    "one-off in the past": (
        pb.Schedule(one_off=pb.OneOffSpec(fire_time=_past())),
        "schedule.one_off.fire_time",
    ),
    "bad topic": (pb.Schedule(on_event=pb.EventSpec(topic="topics/x")), "schedule.on_event.topic"),
}


async def _violations(call) -> list[str]:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    return [field for field, _ in rich_error_details(info.value).field_violations]


@pytest.mark.parametrize("case", list(BAD_JOBS))
async def test_bad_job_definition(env: SchedulerEnv, case: str) -> None:
    job, field = BAD_JOBS[case]
    request = rpc.CreateJobRequest(parent="namespaces/test", job_id="job", job=job)
    assert field in await _violations(env.stub.CreateJob(request))
    jobs = await env.stub.ListJobs(rpc.ListJobsRequest(parent="namespaces/test"))
    assert not jobs.jobs


@pytest.mark.parametrize("case", list(BAD_SCHEDULES))
async def test_bad_schedule(env: SchedulerEnv, case: str) -> None:
    await env.create_job()
    schedule, field = BAD_SCHEDULES[case]
    request = rpc.CreateScheduleRequest(parent=JOB, schedule_id="s", schedule=schedule)
    assert field in await _violations(env.stub.CreateSchedule(request))


async def test_bad_names_and_ids(env: SchedulerEnv) -> None:
    assert "job_id" in await _violations(
        env.stub.CreateJob(
            rpc.CreateJobRequest(parent="namespaces/test", job_id="Bad Id", job=http_job())
        )
    )
    assert "parent" in await _violations(
        env.stub.CreateJob(
            rpc.CreateJobRequest(parent="tenants/test", job_id="job", job=http_job())
        )
    )
    assert "name" in await _violations(
        env.stub.GetSchedule(rpc.GetScheduleRequest(name=f"{JOB}/timers/x"))
    )


async def test_missing_existing_and_stale_versions(env: SchedulerEnv) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await env.stub.GetJob(rpc.GetJobRequest(name=JOB))
    assert info.value.code() is grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await env.create_schedule(interval(60))
    assert info.value.code() is grpc.StatusCode.NOT_FOUND
    await env.create_job()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await env.create_job()
    assert info.value.code() is grpc.StatusCode.ALREADY_EXISTS
    update = http_job(2)
    update.name = JOB
    await env.stub.UpdateJob(rpc.UpdateJobRequest(job=update, expected_version=1))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await env.stub.UpdateJob(rpc.UpdateJobRequest(job=update, expected_version=1))
    assert info.value.code() is grpc.StatusCode.ABORTED
    v1 = await env.stub.GetJob(rpc.GetJobRequest(name=JOB, version=1))
    latest = await env.stub.GetJob(rpc.GetJobRequest(name=JOB))
    assert (v1.job.version, len(v1.job.target.http.endpoints)) == (1, 1)
    assert (latest.job.version, len(latest.job.target.http.endpoints)) == (2, 2)
    await env.create_schedule(interval(60))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await env.create_schedule(interval(60))
    assert info.value.code() is grpc.StatusCode.ALREADY_EXISTS


async def test_backfill_and_preview_bounds(env: SchedulerEnv) -> None:
    await env.create_job()
    schedule = await env.create_schedule(interval(1))
    now = env.clock.now()
    from datetime import timedelta

    from tests.helpers.scheduler import timestamp

    too_many = rpc.BackfillScheduleRequest(
        name=schedule.name,
        start_time=timestamp(now - timedelta(hours=1)),
        end_time=timestamp(now),
    )
    assert "start_time" in await _violations(env.stub.BackfillSchedule(too_many))
    future = rpc.BackfillScheduleRequest(
        name=schedule.name,
        start_time=timestamp(now),
        end_time=timestamp(now + timedelta(1)),
    )
    assert "end_time" in await _violations(env.stub.BackfillSchedule(future))
    preview = rpc.PreviewScheduleRequest(name=schedule.name, count=101)
    assert "count" in await _violations(env.stub.PreviewSchedule(preview))
