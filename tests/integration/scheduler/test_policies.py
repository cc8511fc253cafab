"""Overlap, catch-up, pause/resume, trigger, backfill, preview and fire outcomes."""

from __future__ import annotations

from datetime import UTC, timedelta

import grpc
import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from conveyor.scheduler.v1 import messages_pb2 as pb
from conveyor.scheduler.v1 import service_pb2 as rpc
from tests.helpers.journal import eventually
from tests.helpers.metrics import metric_value
from tests.helpers.scheduler import SchedulerEnv, interval, timestamp

OUT = pb.FireOutcome


async def _outcomes(env: SchedulerEnv, schedule: str) -> list[tuple[int, str]]:
    """(outcome, reason) of every fire, oldest slot first."""
    fires = sorted(await env.fires(schedule), key=lambda f: f.slot_time.ToDatetime())
    return [(f.outcome, f.reason) for f in fires]


async def _count(env: SchedulerEnv, schedule: str, outcome: int) -> int:
    return sum(o == outcome for o, _ in await _outcomes(env, schedule))


async def _count_is(env: SchedulerEnv, schedule: str, outcome: int, expected: int) -> bool:
    return await _count(env, schedule, outcome) == expected


async def test_overlap_skip_records_and_counts_the_skipped_slot(
    env: SchedulerEnv, metric_reader: InMemoryMetricReader
) -> None:
    await env.create_job()
    schedule = await env.create_schedule(interval(60))  # overlap default: skip
    attributes = {"schedule": schedule.name, "reason": "overlap"}
    before = metric_value(metric_reader, "conveyor.scheduler.slots_skipped", attributes)
    await eventually(lambda: _count(env, schedule.name, OUT.FIRE_OUTCOME_SUBMITTED))
    env.clock.advance(60)
    await eventually(lambda: _count(env, schedule.name, OUT.FIRE_OUTCOME_SKIPPED))
    assert await _outcomes(env, schedule.name) == [
        (OUT.FIRE_OUTCOME_SUBMITTED, ""),
        (OUT.FIRE_OUTCOME_SKIPPED, "overlap"),
    ]
    after = metric_value(metric_reader, "conveyor.scheduler.slots_skipped", attributes)
    assert after - before == 1
    assert len(await env.orders()) == 1


async def test_overlap_buffer_one_fires_the_buffered_slot_when_the_running_one_ends(
    env: SchedulerEnv,
) -> None:
    await env.create_job()
    schedule = await env.create_schedule(interval(60, overlap_policy=pb.OVERLAP_POLICY_BUFFER_ONE))
    await eventually(lambda: _count(env, schedule.name, OUT.FIRE_OUTCOME_SUBMITTED))
    env.clock.advance(60)
    await eventually(lambda: _count(env, schedule.name, OUT.FIRE_OUTCOME_BUFFERED))
    env.clock.advance(60)
    await eventually(lambda: _count(env, schedule.name, OUT.FIRE_OUTCOME_SKIPPED))
    [leased] = await env.lease()
    await env.complete(leased, work_found=True)
    await eventually(lambda: _count(env, schedule.name, OUT.FIRE_OUTCOME_SUCCEEDED))
    await eventually(lambda: _count(env, schedule.name, OUT.FIRE_OUTCOME_SUBMITTED))
    outcomes = await _outcomes(env, schedule.name)
    assert [o for o, _ in outcomes] == [
        OUT.FIRE_OUTCOME_SUCCEEDED,
        OUT.FIRE_OUTCOME_SUBMITTED,
        OUT.FIRE_OUTCOME_SKIPPED,
    ]
    assert outcomes[2][1] == "overlap_buffer_full"
    assert len(await env.orders()) == 2


async def test_overlap_cancel_other_cancels_the_running_order(env: SchedulerEnv) -> None:
    await env.create_job()
    schedule = await env.create_schedule(
        interval(60, overlap_policy=pb.OVERLAP_POLICY_CANCEL_OTHER)
    )
    await eventually(lambda: _count(env, schedule.name, OUT.FIRE_OUTCOME_SUBMITTED))
    env.clock.advance(60)
    # The cancel and the new submit go to the queue concurrently (the submit in a batch
    # call): the old order may read back CANCELLED before the new fire is marked SUBMITTED.
    expected = [OUT.FIRE_OUTCOME_CANCELLED, OUT.FIRE_OUTCOME_SUBMITTED]

    async def settled() -> bool:
        return [o for o, _ in await _outcomes(env, schedule.name)] == expected

    await eventually(settled)


async def test_catch_up_after_downtime_fires_once_and_misses_slots_outside_the_window(
    env: SchedulerEnv, metric_reader: InMemoryMetricReader
) -> None:
    await env.create_job()
    schedule = await env.create_schedule(
        interval(60, catch_up_window=pb_seconds(150), overlap_policy=pb.OVERLAP_POLICY_ALLOW_ALL)
    )
    missed = {"schedule": schedule.name, "reason": "missed"}
    before = metric_value(metric_reader, "conveyor.scheduler.slots_skipped", missed)
    await eventually(lambda: _count(env, schedule.name, OUT.FIRE_OUTCOME_SUBMITTED))
    env.clock.advance(timedelta(minutes=5))  # the scheduler "was down" for five slots
    await eventually(lambda: _count_is(env, schedule.name, OUT.FIRE_OUTCOME_SUBMITTED, 2))
    outcomes = await _outcomes(env, schedule.name)
    assert [o for o, _ in outcomes] == [
        OUT.FIRE_OUTCOME_SUBMITTED,  # 00:00, before the outage
        OUT.FIRE_OUTCOME_MISSED,  # 00:01, 00:02: older than 150 s
        OUT.FIRE_OUTCOME_MISSED,
        OUT.FIRE_OUTCOME_SKIPPED,  # 00:03, 00:04: fire-once keeps only the latest
        OUT.FIRE_OUTCOME_SKIPPED,
        OUT.FIRE_OUTCOME_SUBMITTED,  # 00:05
    ]
    assert "catch-up window" in outcomes[1][1]
    after = metric_value(metric_reader, "conveyor.scheduler.slots_skipped", missed)
    assert after - before == 2

    # Each missed and skipped slot is journaled, naming its schedule and why.
    async def journaled() -> list[tuple[str, str]] | None:
        records = await env.journal_records(type_prefix="scheduler.slot.")
        found = [
            (r.type, r.attributes["reason"])
            for r in records
            if r.subjects["schedule"] == schedule.name
        ]
        return found if len(found) == 4 else None

    found = await eventually(journaled)
    assert (
        sorted(t for t, _ in found)
        == ["scheduler.slot.missed"] * 2 + ["scheduler.slot.skipped"] * 2
    )
    assert all(reason for _, reason in found)


async def test_pause_stops_fires_and_resume_continues_from_now(env: SchedulerEnv) -> None:
    await env.create_job()
    schedule = await env.create_schedule(interval(60))
    await eventually(lambda: _count(env, schedule.name, OUT.FIRE_OUTCOME_SUBMITTED))
    paused = await env.stub.PauseSchedule(rpc.PauseScheduleRequest(name=schedule.name))
    assert paused.schedule.paused
    [leased] = await env.lease()
    await env.complete(leased, work_found=True)
    await eventually(lambda: _count(env, schedule.name, OUT.FIRE_OUTCOME_SUCCEEDED))
    env.clock.advance(timedelta(minutes=10))
    assert len(await env.fires(schedule.name)) == 1  # nothing fired or recorded while paused
    resumed = await env.stub.ResumeSchedule(rpc.ResumeScheduleRequest(name=schedule.name))
    next_fire = resumed.schedule.next_fire_time.ToDatetime(tzinfo=UTC)
    # From now, on the schedule's grid: the slot at now, or the one after it when the
    # outcome tracker, applying the finished fire's policy decision after the clock
    # moved, already placed the next slot after now. Never a slot from the pause.
    assert next_fire in (env.clock.now(), env.clock.now() + timedelta(minutes=1))
    await eventually(lambda: _count(env, schedule.name, OUT.FIRE_OUTCOME_SUBMITTED))
    outcomes = await _outcomes(env, schedule.name)
    assert [o for o, _ in outcomes] == [OUT.FIRE_OUTCOME_SUCCEEDED, OUT.FIRE_OUTCOME_SUBMITTED]


async def test_a_schedule_created_paused_fires_only_once_resumed(env: SchedulerEnv) -> None:
    await env.create_job()
    paused = await env.create_schedule(interval(60, paused=True), schedule_id="paused")
    assert paused.paused
    live = await env.create_schedule(interval(60), schedule_id="live")
    got = await env.stub.GetSchedule(rpc.GetScheduleRequest(name=paused.name))
    assert got.schedule.paused
    # Both were due at once: while the live one fires (and then skips an overlapping
    # slot ten minutes later), ticks pass the paused one by.
    await eventually(lambda: _count(env, live.name, OUT.FIRE_OUTCOME_SUBMITTED))
    env.clock.advance(timedelta(minutes=10))
    await eventually(lambda: _count(env, live.name, OUT.FIRE_OUTCOME_SKIPPED))
    assert await env.fires(paused.name) == []
    resumed = await env.stub.ResumeSchedule(rpc.ResumeScheduleRequest(name=paused.name))
    assert not resumed.schedule.paused
    assert resumed.schedule.next_fire_time.ToDatetime(tzinfo=UTC) == env.clock.now()
    await eventually(lambda: _count(env, paused.name, OUT.FIRE_OUTCOME_SUBMITTED))


async def test_trigger_backfill_and_preview(env: SchedulerEnv) -> None:
    await env.create_job()
    schedule = await env.create_schedule(interval(3600, overlap_policy=pb.OVERLAP_POLICY_ALLOW_ALL))
    now = env.clock.now()
    await eventually(lambda: _count(env, schedule.name, OUT.FIRE_OUTCOME_SUBMITTED))
    env.clock.advance(1)  # a trigger at a slot's very instant would be that slot's fire
    triggered = await env.stub.TriggerSchedule(rpc.TriggerScheduleRequest(name=schedule.name))
    assert triggered.fire.kind == pb.FIRE_KIND_TRIGGERED
    assert triggered.fire.slot_time.ToDatetime(tzinfo=UTC) == now + timedelta(seconds=1)
    backfill = await env.stub.BackfillSchedule(
        rpc.BackfillScheduleRequest(
            name=schedule.name,
            start_time=timestamp(now - timedelta(hours=3)),
            end_time=timestamp(now),
        )
    )
    assert [f.slot_time.ToDatetime(tzinfo=UTC) for f in backfill.fires] == [
        now - timedelta(hours=h) for h in (3, 2, 1)
    ]
    again = await env.stub.BackfillSchedule(
        rpc.BackfillScheduleRequest(
            name=schedule.name,
            start_time=timestamp(now - timedelta(hours=3)),
            end_time=timestamp(now),
        )
    )
    assert not again.fires and again.already_fired == 3
    await eventually(lambda: _count_is(env, schedule.name, OUT.FIRE_OUTCOME_SUBMITTED, 5))
    assert len(await env.orders()) == 5  # scheduled 00:00, trigger, three backfilled
    preview = await env.stub.PreviewSchedule(
        rpc.PreviewScheduleRequest(name=schedule.name, count=3)
    )
    assert [t.ToDatetime(tzinfo=UTC) for t in preview.fire_times] == [
        now + timedelta(hours=h) for h in (1, 2, 3)
    ]


async def test_list_fires_reports_outcomes_read_back_from_the_queue(env: SchedulerEnv) -> None:
    await env.create_job()
    schedule = await env.create_schedule(interval(60, overlap_policy=pb.OVERLAP_POLICY_ALLOW_ALL))
    await eventually(lambda: _count(env, schedule.name, OUT.FIRE_OUTCOME_SUBMITTED))
    [leased] = await env.lease()
    await eventually(lambda: _count(env, schedule.name, OUT.FIRE_OUTCOME_RUNNING))
    await env.complete(leased, work_found=False)
    await eventually(lambda: _count(env, schedule.name, OUT.FIRE_OUTCOME_SUCCEEDED))
    [fire] = await env.fires(schedule.name)
    assert fire.work_order == leased.work_order.name and not fire.work_found
    env.clock.advance(60)
    await eventually(lambda: _count(env, schedule.name, OUT.FIRE_OUTCOME_SUBMITTED))
    [leased] = await env.lease()
    from conveyor.common.v1 import types_pb2
    from conveyor.queue.v1 import service_pb2 as qrpc

    await env.queue.FailWorkOrder(
        qrpc.FailWorkOrderRequest(
            name=leased.work_order.name,
            lease_token=leased.lease_token,
            failure=types_pb2.Failure(type="auth", message="token expired", retryable=False),
        )
    )
    await eventually(lambda: _count(env, schedule.name, OUT.FIRE_OUTCOME_FAILED))
    failed = [f for f in await env.fires(schedule.name) if f.outcome == OUT.FIRE_OUTCOME_FAILED]
    assert failed[0].error_type == "auth" and "token expired" in failed[0].reason


def pb_seconds(value: float):  # type: ignore[no-untyped-def]
    from tests.helpers.scheduler import seconds

    return seconds(value)


async def test_update_schedule_replaces_the_spec_and_keeps_history_and_uid(
    env: SchedulerEnv,
) -> None:
    await env.create_job()
    schedule = await env.create_schedule(interval(60))
    await eventually(lambda: _count(env, schedule.name, OUT.FIRE_OUTCOME_SUBMITTED))
    changed = interval(3600)
    changed.name = schedule.name
    updated = (await env.stub.UpdateSchedule(rpc.UpdateScheduleRequest(schedule=changed))).schedule
    assert updated.uid == schedule.uid
    assert updated.interval.every.seconds == 3600
    now = env.clock.now()
    assert updated.next_fire_time.ToDatetime(tzinfo=UTC) in {now, now + timedelta(hours=1)}

    async def moved_on() -> bool:
        got = await env.stub.GetSchedule(rpc.GetScheduleRequest(name=schedule.name))
        return got.schedule.next_fire_time.ToDatetime(tzinfo=UTC) == now + timedelta(hours=1)

    await eventually(moved_on)
    assert len(await env.fires(schedule.name)) == 1  # the slot already fired is not fired again
    assert len(await env.orders()) == 1
    bad = interval(0.1)
    bad.name = schedule.name
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await env.stub.UpdateSchedule(rpc.UpdateScheduleRequest(schedule=bad))
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
