"""Interval, cron and one-off schedules fire through the outbox into the queue, once per slot."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from conveyor.common.v1 import job_pb2
from conveyor.scheduler.v1 import messages_pb2 as pb
from conveyor_core.settings import CoreSettings
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


async def _due_together(env: SchedulerEnv, jobs: list[str]) -> list[str]:
    """One interval schedule per job id, all due at the same instant; returns their names."""
    names = []
    anchor = env.clock.now() + timedelta(seconds=60)
    for i, job in enumerate(jobs):
        spec = interval(60)
        spec.interval.anchor_time.CopyFrom(timestamp(anchor))
        names.append((await env.create_schedule(spec, f"s{i}", job)).name)
    env.clock.advance(60)  # all due at once: one tick
    return names


async def test_a_ticks_fires_go_in_one_batch_call_each_in_its_own_trace(
    spans: InMemorySpanExporter, env: SchedulerEnv
) -> None:
    await env.create_job()
    spans.clear()
    names = await _due_together(env, ["job"] * 5)
    for name in names:
        await eventually(lambda n=name: _submitted(env, n, 1))
    fires = {f.work_order: f for n in names for f in await env.fires(n)}
    orders = await env.orders()
    assert len(orders) == 5 and set(fires) == {o.name for o in orders}
    # each order keeps its own fire's correlation id and trace
    assert {o.correlation_id for o in orders} == {f.correlation_id for f in fires.values()}
    assert all(o.correlation_id == fires[o.name].correlation_id for o in orders)
    assert len({o.correlation_id for o in orders}) == 5
    finished = spans.get_finished_spans()
    fire_traces = {
        s.attributes["conveyor.fire_id"]: f"{s.context.trace_id:032x}"
        for s in finished
        if s.name == "scheduler.fire"
    }
    for order in orders:
        fire_id = fires[order.name].name.rsplit("/", 1)[1]
        assert order.traceparent.split("-")[1] == fire_traces[fire_id]
    submitted = {
        s.attributes["conveyor.work_order.id"]: f"{s.context.trace_id:032x}"
        for s in finished
        if s.name == "work_order.submitted"
    }
    assert {o.name.rsplit("/", 1)[1]: o.traceparent.split("-")[1] for o in orders} == submitted
    # ... and they went to the queue in one call
    server = [s.name.rsplit("/", 1)[1] for s in finished if s.kind == trace.SpanKind.SERVER]
    calls = [name for name in server if name.endswith("SubmitWorkOrders")]
    singles = [name for name in server if name == "SubmitWorkOrder"]
    assert calls.count("BatchSubmitWorkOrders") == 1 and singles == []


async def test_a_refused_batch_is_retried_order_by_order_to_isolate_the_bad_one(
    core: CoreSettings, fast_scheduler: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The queue takes small payloads only: the big job's order is refused, the others not.
    monkeypatch.setenv("CONVEYOR_QUEUE_MAX_PAYLOAD_BYTES", "2000")
    env = await SchedulerEnv(core).start()
    try:
        big = http_job()
        for i in range(20):
            big.target.http.endpoints.add(
                name=f"big{i}", method="GET", url=f"http://127.0.0.1:9/{'x' * 200}"
            )
        await env.create_job("small")
        await env.create_job("big", big)
        names = await _due_together(env, ["small", "big", "small"])

        async def settled() -> list[pb.Fire] | None:
            fires = [f for n in names for f in await env.fires(n)]
            done = {pb.FIRE_OUTCOME_SUBMITTED, pb.FIRE_OUTCOME_FAILED}
            return fires if len(fires) == 3 and all(f.outcome in done for f in fires) else None

        await eventually(settled)
        fires = await settled()
        assert fires is not None
        outcomes = [f.outcome for f in fires]
        assert outcomes == [
            pb.FIRE_OUTCOME_SUBMITTED,
            pb.FIRE_OUTCOME_FAILED,
            pb.FIRE_OUTCOME_SUBMITTED,
        ]
        assert fires[1].error_type == "submit_rejected"
        assert "payload" in fires[1].reason, fires[1].reason
        orders = await env.orders()
        assert {o.correlation_id for o in orders} == {
            fires[0].correlation_id,
            fires[2].correlation_id,
        }
    finally:
        await env.stop()
