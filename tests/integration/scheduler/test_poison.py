"""One bad schedule never stops the firing tick: it is refused at the edge, and a bad row
planted in the database (bypassing validation) is paused with its cause while the others fire."""

from __future__ import annotations

import uuid
from datetime import timedelta

import grpc
import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from sqlalchemy import insert, select, text

from conveyor.scheduler.v1 import messages_pb2 as pb
from conveyor.scheduler.v1 import service_pb2 as rpc
from conveyor_core.grpc import rich_error_details
from conveyor_scheduler.store.tables import journal_outbox, submit_outbox
from tests.helpers.journal import eventually
from tests.helpers.metrics import metric_value
from tests.helpers.scheduler import NAMESPACE, SchedulerEnv, http_job, interval

POISONED = "conveyor.scheduler.poisoned_items"
ALLOW_ALL = pb.OVERLAP_POLICY_ALLOW_ALL


async def test_an_interval_past_the_maximum_is_refused_naming_field_value_and_limit(
    env: SchedulerEnv,
) -> None:
    await env.create_job()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await env.create_schedule(interval(10**12, paused=True))
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    violations = dict(rich_error_details(info.value).field_violations)
    description = violations["schedule.interval.every"]
    assert "1e+12s" in description and "CONVEYOR_SCHEDULER_MAX_INTERVAL_SECONDS" in description


@pytest.mark.parametrize("field", ["backoff_coefficient", "jitter"])
async def test_a_job_retry_policy_with_nan_is_refused(env: SchedulerEnv, field: str) -> None:
    job = http_job()
    setattr(job.retry_policy, field, float("nan"))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await env.create_job(job=job)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    violations = dict(rich_error_details(info.value).field_violations)
    assert f"job.retry_policy.{field}" in violations


async def _fired(env: SchedulerEnv, schedule: str, count: int) -> bool:
    return len([f for f in await env.fires(schedule) if f.kind == pb.FIRE_KIND_SCHEDULED]) >= count


async def _two_schedules(env: SchedulerEnv) -> tuple[pb.Schedule, pb.Schedule]:
    await env.create_job()
    good = await env.create_schedule(interval(60, overlap_policy=ALLOW_ALL), "good")
    bad = await env.create_schedule(interval(60, overlap_policy=ALLOW_ALL), "bad")
    await eventually(lambda: _fired(env, good.name, 1))
    await eventually(lambda: _fired(env, bad.name, 1))
    return good, bad


async def _execute(env: SchedulerEnv, sql: str, **params: object) -> None:
    async with env.service.engine_db.begin() as conn:
        await conn.execute(text(sql), params)


async def test_a_stored_interval_of_a_trillion_seconds_ends_and_the_others_fire(
    env: SchedulerEnv,
) -> None:
    good, bad = await _two_schedules(env)
    spec = (
        '{"every_us": 1000000000000000000, "anchor_us": 1893456000000000, "cron": "", '
        '"time_zone": "", "fire_at_us": null, "topic": "", "debounce_us": 0}'
    )
    await _execute(
        env,
        "UPDATE scheduler_schedules SET spec = :spec WHERE schedule_id = 'bad'",
        spec=spec,
    )
    for n in (2, 3):
        env.clock.advance(timedelta(seconds=60))
        await eventually(lambda n=n: _fired(env, good.name, n))
    got = await env.stub.GetSchedule(rpc.GetScheduleRequest(name=bad.name))
    assert not got.schedule.HasField("next_fire_time")  # its next slot is past year 9999


async def test_a_schedule_that_cannot_be_planned_is_paused_with_its_cause(
    env: SchedulerEnv, metric_reader: InMemoryMetricReader
) -> None:
    before = metric_value(metric_reader, POISONED, {"loop": "fire_tick"})
    good, bad = await _two_schedules(env)
    # An interval of zero (validation refuses it): dividing by it raises in planning.
    await _execute(
        env,
        "UPDATE scheduler_schedules SET spec = :spec WHERE schedule_id = 'bad'",
        spec='{"every_us": 0, "anchor_us": 1893456000000000, "cron": "", "time_zone": "", '
        '"fire_at_us": null, "topic": "", "debounce_us": 0}',
    )
    for n in (2, 3):
        env.clock.advance(timedelta(seconds=60))
        await eventually(lambda n=n: _fired(env, good.name, n))
    got = await env.stub.GetSchedule(rpc.GetScheduleRequest(name=bad.name))
    assert got.schedule.paused
    decisions = await env.stub.ListPolicyDecisions(rpc.ListPolicyDecisionsRequest(parent=bad.name))
    quarantined = [d for d in decisions.decisions if d.policy == "quarantined"]
    assert len(quarantined) == 1 and "ZeroDivisionError" in quarantined[0].reason
    assert metric_value(metric_reader, POISONED, {"loop": "fire_tick"}) == before + 1


async def test_an_unreadable_schedule_row_is_paused_and_the_others_fire(env: SchedulerEnv) -> None:
    good, _bad = await _two_schedules(env)
    await _execute(env, "UPDATE scheduler_schedules SET kind = 'bogus' WHERE schedule_id = 'bad'")
    env.clock.advance(timedelta(seconds=60))
    await eventually(lambda: _fired(env, good.name, 2))
    await eventually(lambda: _paused(env, "bad"))


async def _paused(env: SchedulerEnv, schedule_id: str) -> bool:
    async with env.service.engine_db.connect() as conn:
        statement = "SELECT paused FROM scheduler_schedules WHERE schedule_id = :id"
        return bool((await conn.execute(text(statement), {"id": schedule_id})).scalar_one())


async def test_a_schedule_whose_fire_the_database_refuses_is_paused_and_the_others_fire(
    env: SchedulerEnv,
) -> None:
    """The batch's writes fail: the tick falls back to one transaction per schedule."""
    good, bad = await _two_schedules(env)
    await _refuse_fires_of(env, bad)
    for n in (2, 3):
        env.clock.advance(timedelta(seconds=60))
        await eventually(lambda n=n: _fired(env, good.name, n))
    await eventually(lambda: _paused(env, "bad"))
    assert not await _paused(env, "good")


async def _refuse_fires_of(env: SchedulerEnv, schedule: pb.Schedule) -> None:
    """A trigger that refuses every new fire row of `schedule` (as a broken row would)."""
    uid = uuid.UUID(schedule.uid)
    if env.service.engine_db.dialect.name == "postgresql":
        await _execute(
            env,
            "CREATE FUNCTION refuse_fire() RETURNS trigger AS $$ BEGIN "
            f"IF NEW.schedule_uid = '{uid}' THEN RAISE EXCEPTION 'poisoned' "
            "USING ERRCODE = 'check_violation'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql",
        )
        await _execute(
            env,
            "CREATE TRIGGER refuse_fire BEFORE INSERT ON scheduler_fires "
            "FOR EACH ROW EXECUTE FUNCTION refuse_fire()",
        )
    else:
        await _execute(
            env,
            "CREATE TRIGGER refuse_fire BEFORE INSERT ON scheduler_fires "
            f"WHEN NEW.schedule_uid = '{uid.hex}' BEGIN SELECT RAISE(ABORT, 'poisoned'); END",
        )


async def _plant_journal_rows(env: SchedulerEnv) -> list[int]:
    """Outbox rows no writer makes: a namespace the journal refuses, and (SQLite only, whose
    JSON column keeps any text) subjects that are not JSON."""
    engine = env.service.engine_db
    sqlite = engine.dialect.name == "sqlite"
    row = {
        "type": "scheduler.schedule.fired",
        "namespace": "Not A Namespace",
        "subjects": {},
        "attributes": {},
        "correlation_id": "",
        "traceparent": "",
        "at": 1_900_000_000_000_000,
    }
    rows = [row, {**row, "namespace": NAMESPACE}] if sqlite else [row]
    async with engine.begin() as conn:
        result = await conn.execute(insert(journal_outbox).returning(journal_outbox.c.seq), rows)
        seqs = list(result.scalars())
        if sqlite:
            await conn.execute(
                text("UPDATE scheduler_journal_outbox SET subjects = 'not json' WHERE seq = :s"),
                {"s": seqs[-1]},
            )
    return seqs


async def _marked(env: SchedulerEnv, seqs: list[int]) -> bool:
    async with env.service.engine_db.connect() as conn:
        statement = select(journal_outbox.c.seq).where(
            journal_outbox.c.seq.in_(seqs), journal_outbox.c.journaled_at.is_(None)
        )
        return list((await conn.execute(statement)).scalars()) == []


async def test_poisoned_journal_outbox_rows_are_skipped_and_fires_still_journaled(
    env: SchedulerEnv, metric_reader: InMemoryMetricReader
) -> None:
    before = metric_value(metric_reader, POISONED, {"loop": "outbox"})
    planted = await _plant_journal_rows(env)
    good, _bad = await _two_schedules(env)

    async def journaled() -> bool:
        records = await env.journal_records(type_prefix="scheduler.schedule.fired")
        return any(r.subjects.get("schedule") == good.name for r in records)

    await eventually(journaled)
    await eventually(lambda: _marked(env, planted))
    assert metric_value(metric_reader, POISONED, {"loop": "outbox"}) == before + len(planted)


async def test_a_submit_row_that_breaks_the_call_fails_its_fire_and_the_others_are_submitted(
    env: SchedulerEnv, metric_reader: InMemoryMetricReader
) -> None:
    """A submit outbox row whose request does not decode used to fail every relay pass
    (a DecodeError is no gRPC answer), so no fire of any schedule reached the queue."""
    before = metric_value(metric_reader, POISONED, {"loop": "submit_relay"})
    good, bad = await _two_schedules(env)

    async def bad_submitted() -> pb.Fire | None:  # its own delivery done: nothing races ours
        fire = (await env.fires(bad.name))[0]
        return fire if fire.outcome == pb.FIRE_OUTCOME_SUBMITTED else None

    bad_fire = await eventually(bad_submitted)
    fire_id = uuid.UUID(bad_fire.name.rsplit("/", 1)[1])
    sqlite = env.service.engine_db.dialect.name == "sqlite"
    await _execute(
        env,
        "UPDATE scheduler_fires SET outcome = 'pending' WHERE id = :id",
        id=fire_id.hex if sqlite else fire_id,
    )
    async with env.service.engine_db.begin() as conn:
        await conn.execute(
            insert(submit_outbox),
            {
                "fire_id": fire_id,
                "action": "submit",
                "parent": f"namespaces/{NAMESPACE}/queues/jobs",
                "request": b"\xff\xff\xff",  # a corrupt WorkOrderSpec
                "held": False,
                "correlation_id": "",
                "traceparent": "",
                "fencing_token": 0,
                "slot_at": 1_893_456_000_000_000,
                "created_at": 1_893_456_000_000_000,
            },
        )
    env.clock.advance(timedelta(seconds=60))

    async def submitted_twice() -> bool:
        fires = [f for f in await env.fires(good.name) if f.kind == pb.FIRE_KIND_SCHEDULED]
        return len([f for f in fires if f.work_order]) >= 2

    await eventually(submitted_twice)

    async def bad_failed() -> bool:
        fire = next(f for f in await env.fires(bad.name) if f.name == bad_fire.name)
        return fire.outcome == pb.FIRE_OUTCOME_FAILED

    await eventually(bad_failed)
    fire = next(f for f in await env.fires(bad.name) if f.name == bad_fire.name)
    assert fire.error_type == "poisoned" and "DecodeError" in fire.reason
    assert metric_value(metric_reader, POISONED, {"loop": "submit_relay"}) == before + 1


async def test_a_schedule_created_paused_never_fires(env: SchedulerEnv) -> None:
    """`paused: true` on CreateSchedule was only read on output: the schedule was live."""
    await env.create_job()
    paused = await env.create_schedule(interval(60, paused=True), "paused")
    live = await env.create_schedule(interval(60), "live")
    assert paused.paused
    for n in (2, 3):
        env.clock.advance(timedelta(seconds=60))
        await eventually(lambda n=n: _fired(env, live.name, n))
    assert await env.fires(paused.name) == []
    got = await env.stub.GetSchedule(rpc.GetScheduleRequest(name=paused.name))
    assert got.schedule.paused
