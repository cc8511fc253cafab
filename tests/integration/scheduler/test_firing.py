"""Interval, cron and one-off schedules fire through the outbox into the queue, once per slot."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from conveyor.common.v1 import job_pb2
from conveyor.scheduler.v1 import messages_pb2 as pb
from conveyor_core.settings import CoreSettings
from conveyor_core.telemetry import configure_tracing
from tests.helpers.journal import eventually
from tests.helpers.scheduler import SchedulerEnv, http_job, interval, timestamp

INVOCATION_TYPE = "application/x-protobuf; messageType=conveyor.common.v1.JobInvocation"


async def test_interval_schedule_fires_each_slot_once_with_a_job_invocation(
    env: SchedulerEnv,
) -> None:
    job = await env.create_job()
    schedule = await env.create_schedule(interval(60, overlap_policy=pb.OVERLAP_POLICY_ALLOW_ALL))
    start = env.clock.now()
    assert schedule.next_fire_time.ToDatetime(tzinfo=UTC) == start

    await eventually(lambda: _submitted(env, schedule.name, 1))
    env.clock.advance(timedelta(seconds=60))
    await eventually(lambda: _submitted(env, schedule.name, 2))

    orders = await env.orders()
    assert len(orders) == 2
    keys = sorted(o.spec.idempotency_key for o in orders)
    uid = schedule.uid
    assert keys == [
        f"schedule/{uid}/2030-01-01T00:00:00.000000Z",
        f"schedule/{uid}/2030-01-01T00:01:00.000000Z",
    ]
    order = min(orders, key=lambda o: o.spec.idempotency_key)
    assert order.spec.payload.content_type == INVOCATION_TYPE
    invocation = job_pb2.JobInvocation.FromString(order.spec.payload.data)
    assert invocation.job == job.name and invocation.job_version == 1
    assert invocation.schedule == schedule.name
    assert invocation.target.http.endpoints[0].name == "e0"
    assert invocation.slot_time.ToDatetime(tzinfo=UTC) == start
    labels = order.spec.labels
    assert labels["schedule"] == schedule.name and labels["job_version"] == "1"
    assert int(labels["fencing_token"]) > 0
    fires = await env.fires(schedule.name)
    assert labels["fire_id"] in {f.name.rsplit("/", 1)[1] for f in fires}
    assert all(f.outcome == pb.FIRE_OUTCOME_SUBMITTED for f in fires)


async def test_one_off_fires_once_then_has_no_next(env: SchedulerEnv) -> None:
    await env.create_job()
    at = env.clock.now() + timedelta(minutes=5)
    schedule = await env.create_schedule(
        pb.Schedule(one_off=pb.OneOffSpec(fire_time=timestamp(at))), "once"
    )
    env.clock.advance(timedelta(minutes=5))
    await eventually(lambda: _submitted(env, schedule.name, 1))
    env.clock.advance(timedelta(hours=1))
    got = await env.stub.GetSchedule(pb_get(schedule.name))
    assert not got.schedule.HasField("next_fire_time")
    assert len(await env.orders()) == 1


async def test_fires_record_the_job_version_they_ran(env: SchedulerEnv) -> None:
    from conveyor.scheduler.v1 import service_pb2 as rpc

    await env.create_job()
    schedule = await env.create_schedule(interval(60, overlap_policy=pb.OVERLAP_POLICY_ALLOW_ALL))
    await eventually(lambda: _submitted(env, schedule.name, 1))
    updated = http_job(2)
    updated.name = "namespaces/test/jobs/job"
    await env.stub.UpdateJob(rpc.UpdateJobRequest(job=updated, expected_version=1))
    env.clock.advance(timedelta(seconds=60))
    await eventually(lambda: _submitted(env, schedule.name, 2))
    fires = sorted(await env.fires(schedule.name), key=lambda f: f.slot_time.ToDatetime())
    assert [f.job_version for f in fires] == [1, 2]


def pb_get(name: str):  # type: ignore[no-untyped-def]
    from conveyor.scheduler.v1 import service_pb2 as rpc

    return rpc.GetScheduleRequest(name=name)


async def _submitted(env: SchedulerEnv, schedule: str, count: int) -> bool:
    fires = await env.fires(schedule)
    done = [f for f in fires if f.outcome == pb.FIRE_OUTCOME_SUBMITTED]
    return len(done) >= count


__all__ = ["datetime"]


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    configure_tracing("conveyor-test", CoreSettings(), extra_exporter=exporter)
    return exporter


async def test_a_fire_is_journaled_and_its_order_joins_its_trace_and_correlation(
    spans: InMemorySpanExporter, env: SchedulerEnv
) -> None:
    from conveyor.events.v1 import service_pb2 as erpc
    from conveyor.events.v1 import service_pb2_grpc as egrpc

    await env.create_job()
    schedule = await env.create_schedule(interval(60))
    await eventually(lambda: _submitted(env, schedule.name, 1))
    [fire] = await env.fires(schedule.name)
    [order] = await env.orders()
    assert fire.correlation_id and order.correlation_id == fire.correlation_id
    journal = egrpc.JournalServiceStub(env._channel)

    async def fired_record():  # type: ignore[no-untyped-def]
        response = await journal.ReadJournal(erpc.ReadJournalRequest(page_size=1000))
        found = [r for r in response.records if r.type == "scheduler.schedule.fired"]
        return found[0] if found else None

    await eventually(fired_record)
    record = await fired_record()
    assert record.subjects["schedule"] == schedule.name
    assert record.correlation_id == fire.correlation_id
    trace_id = order.traceparent.split("-")[1]
    assert record.trace_id == trace_id
    fire_id = fire.name.rsplit("/", 1)[1]
    [fire_span] = [
        s
        for s in spans.get_finished_spans()
        if s.name == "scheduler.fire" and s.attributes["conveyor.fire_id"] == fire_id
    ]
    assert f"{fire_span.context.trace_id:032x}" == trace_id


async def test_with_a_trace_per_tick_a_ticks_fires_go_in_one_batch_sharing_its_trace(
    core: CoreSettings, fast_scheduler: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVEYOR_SCHEDULER_TRACE_PER_FIRE", "false")
    env = await SchedulerEnv(core).start()
    try:
        await env.create_job()
        names = []
        anchor = env.clock.now() + timedelta(seconds=60)
        for i in range(5):
            spec = interval(60)
            spec.interval.anchor_time.CopyFrom(timestamp(anchor))
            schedule = await env.create_schedule(spec, f"s{i}")
            names.append(schedule.name)
        env.clock.advance(60)  # all five due at once: one tick
        for name in names:
            await eventually(lambda n=name: _submitted(env, n, 1))
        orders = await env.orders()
        assert len(orders) == 5
        fires = [f for n in names for f in await env.fires(n)]
        by_correlation = {f.correlation_id for f in fires}
        assert {o.correlation_id for o in orders} == by_correlation
        assert len(by_correlation) == 1  # one tick: one id, one trace, one batch call
        assert len({o.traceparent.split("-")[1] for o in orders}) == 1
    finally:
        await env.stop()
