"""Conformance of SchedulerStore (services/scheduler/store/base.py), part one: jobs,
schedules, policy decisions and the journal, on every backend, through the Protocol
alone, with the time from a manual clock. Firing and the outbox: test_scheduler_store_fires."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from conveyor_core.clock import ManualClock
from conveyor_scheduler.domain.model import (
    CatchUpMode,
    JobDefinition,
    JobRef,
    OverlapPolicy,
    ScheduleKind,
    SchedulePolicy,
    ScheduleRef,
    ScheduleSpec,
)
from conveyor_scheduler.errors import (
    JobExists,
    JobNotFound,
    JobVersionConflict,
    ScheduleExists,
    ScheduleNotFound,
    TooManySchedules,
)
from conveyor_scheduler.store.base import (
    JournalEntry,
    NewDecision,
    NewSchedule,
    SchedulerStore,
    ScheduleTiming,
)
from conveyor_scheduler.store.outbox import SqlJournalOutbox
from tests.store.scheduler_data import (
    DEFINITION,
    EVERY,
    POLICY,
    ROOMY,
    add_job,
    add_schedule,
    fire_write,
    interval,
    new_schedule,
    on_event,
)

NS = "conformance"  # rebound per test (conftest's namespace fixture): a module shares one database
OTHER = JobDefinition(b"\x0a\x05other", "slow", priority=-1)


def job(job_id: str = "nightly") -> JobRef:
    return JobRef(NS, job_id)


def sched(schedule_id: str = "hourly", job_id: str = "nightly") -> ScheduleRef:
    return ScheduleRef(NS, job_id, schedule_id)


# -- jobs -----------------------------------------------------------------------------


async def test_job_insert_stores_version_one_as_given(
    scheduler_store: SchedulerStore, clock: ManualClock
) -> None:
    created = await scheduler_store.job_insert(job(), DEFINITION, clock.now())
    assert (created.ref, created.version, created.definition) == (job(), 1, DEFINITION)
    assert created.created_at == created.updated_at == clock.now()
    assert await scheduler_store.job_get(job()) == created
    assert await scheduler_store.job_get(job(), 1) == created


async def test_job_insert_of_an_existing_id_raises_exists_in_its_namespace_only(
    scheduler_store: SchedulerStore, clock: ManualClock
) -> None:
    await scheduler_store.job_insert(job(), DEFINITION, clock.now())
    with pytest.raises(JobExists):
        await scheduler_store.job_insert(job(), OTHER, clock.now())
    assert (await scheduler_store.job_get(job())).definition == DEFINITION
    elsewhere = JobRef(f"{NS}-b", "nightly")
    assert (await scheduler_store.job_insert(elsewhere, OTHER, clock.now())).version == 1


async def test_job_get_of_an_unknown_job_or_version_raises_not_found(
    scheduler_store: SchedulerStore, clock: ManualClock
) -> None:
    with pytest.raises(JobNotFound):
        await scheduler_store.job_get(job("missing"))
    await add_job(scheduler_store, NS, "nightly", clock.now())
    with pytest.raises(JobNotFound):
        await scheduler_store.job_get(job(), 2)


async def test_job_update_adds_a_version_and_keeps_the_old_ones(
    scheduler_store: SchedulerStore, clock: ManualClock
) -> None:
    first = await add_job(scheduler_store, NS, "nightly", clock.now())
    clock.advance(10)
    second = await scheduler_store.job_update(job(), OTHER, 1, clock.now())
    assert (second.version, second.definition) == (2, OTHER)
    assert (second.created_at, second.updated_at) == (first.created_at, clock.now())
    assert await scheduler_store.job_get(job()) == second
    assert (await scheduler_store.job_get(job(), 1)).definition == DEFINITION
    clock.advance(10)
    # Expected version 0: no precondition.
    third = await scheduler_store.job_update(job(), DEFINITION, 0, clock.now())
    assert third.version == 3 and (await scheduler_store.job_get(job())).version == 3


async def test_job_update_at_a_stale_version_or_of_an_unknown_job_raises(
    scheduler_store: SchedulerStore, clock: ManualClock
) -> None:
    await add_job(scheduler_store, NS, "nightly", clock.now())
    await scheduler_store.job_update(job(), OTHER, 1, clock.now())
    with pytest.raises(JobVersionConflict):
        await scheduler_store.job_update(job(), DEFINITION, 1, clock.now())
    current = await scheduler_store.job_get(job())
    assert (current.version, current.definition) == (2, OTHER)
    with pytest.raises(JobNotFound):
        await scheduler_store.job_update(job("missing"), DEFINITION, 0, clock.now())


async def test_job_list_pages_the_latest_versions_by_id_in_one_namespace(
    scheduler_store: SchedulerStore, clock: ManualClock
) -> None:
    for job_id in ("c", "a", "d", "b"):
        await add_job(scheduler_store, NS, job_id, clock.now())
    await scheduler_store.job_update(job("b"), OTHER, 1, clock.now())
    await add_job(scheduler_store, f"{NS}-b", "a0", clock.now())
    first = await scheduler_store.job_list(NS, "", 3)
    assert [j.ref.job_id for j in first] == ["a", "b", "c"]
    assert first[1].version == 2 and first[1].definition == OTHER
    rest = await scheduler_store.job_list(NS, first[-1].ref.job_id, 3)
    assert [j.ref.job_id for j in rest] == ["d"]
    assert await scheduler_store.job_list(NS, "d", 3) == []
    assert await scheduler_store.job_list(f"{NS}-none", "", 3) == []


async def test_job_delete_removes_the_job_with_its_schedules(
    scheduler_store: SchedulerStore, clock: ManualClock
) -> None:
    now = clock.now()
    await add_job(scheduler_store, NS, "nightly", now)
    await add_job(scheduler_store, NS, "kept", now)
    gone = await add_schedule(scheduler_store, sched(), now, now)
    kept = await add_schedule(scheduler_store, sched(job_id="kept"), now, now)
    await scheduler_store.fire_insert_many(gone.uid, [fire_write(gone, now, now)])
    await scheduler_store.job_delete(job())
    with pytest.raises(JobNotFound):
        await scheduler_store.job_get(job(), 1)
    assert await scheduler_store.schedule_get_by_uid(gone.uid) is None
    assert await scheduler_store.fire_list(gone.uid, 0, 10) == []
    assert await scheduler_store.schedule_get(kept.ref) == kept
    with pytest.raises(JobNotFound):
        await scheduler_store.job_delete(job())
    # The id is free again, from version 1.
    assert (await add_job(scheduler_store, NS, "nightly", now)).version == 1


# -- schedules ------------------------------------------------------------------------


async def test_schedule_insert_stores_it_as_given(
    scheduler_store: SchedulerStore, clock: ManualClock
) -> None:
    now = clock.now()
    await add_job(scheduler_store, NS, "nightly", now)
    new = new_schedule(sched(), now, now + timedelta(minutes=1), paused=True)
    created = await scheduler_store.schedule_insert(new, ROOMY)
    assert (created.uid, created.ref, created.spec, created.policy) == (
        new.uid,
        sched(),
        interval(now),
        POLICY,
    )
    assert created.paused and created.backoff_level == 0 and created.next_endpoints == ()
    assert created.next_slot_at == created.next_fire_at == now + timedelta(minutes=1)
    assert created.created_at == created.updated_at == now
    assert await scheduler_store.schedule_get(sched()) == created
    assert await scheduler_store.schedule_get_by_uid(new.uid) == created


async def test_schedule_specs_of_every_kind_round_trip(
    scheduler_store: SchedulerStore, clock: ManualClock
) -> None:
    now = clock.now()
    await add_job(scheduler_store, NS, "nightly", now)
    specs = [
        interval(now - timedelta(hours=1)),
        ScheduleSpec(ScheduleKind.CRON, cron="*/5 9-17 * * 1-5", time_zone="America/New_York"),
        ScheduleSpec(ScheduleKind.ONE_OFF, fire_at=now + timedelta(days=3, microseconds=7)),
        on_event("orders.created"),
    ]
    for i, spec in enumerate(specs):
        new = new_schedule(sched(f"s{i}"), now, None, spec=spec)
        await scheduler_store.schedule_insert(new, ROOMY)
        stored = await scheduler_store.schedule_get_by_uid(new.uid)
        assert stored is not None and (stored.spec, stored.policy) == (spec, POLICY)
        assert stored.next_slot_at is None and stored.next_fire_at is None


async def test_schedule_insert_needs_its_job_and_a_free_id(
    scheduler_store: SchedulerStore, clock: ManualClock
) -> None:
    now = clock.now()
    with pytest.raises(JobNotFound):
        await add_schedule(scheduler_store, sched(), now, now)
    await add_job(scheduler_store, NS, "nightly", now)
    first = await add_schedule(scheduler_store, sched(), now, now)
    with pytest.raises(ScheduleExists):
        await add_schedule(scheduler_store, sched(), now, None)
    assert await scheduler_store.schedule_get(sched()) == first


async def test_schedule_insert_beyond_max_per_job_raises_too_many(
    scheduler_store: SchedulerStore, clock: ManualClock
) -> None:
    now = clock.now()
    await add_job(scheduler_store, NS, "nightly", now)
    await add_job(scheduler_store, NS, "other", now)
    for i in range(2):
        await scheduler_store.schedule_insert(new_schedule(sched(f"s{i}"), now, now), 2)
    with pytest.raises(TooManySchedules):
        await scheduler_store.schedule_insert(new_schedule(sched("s2"), now, now), 2)
    with pytest.raises(ScheduleNotFound):
        await scheduler_store.schedule_get(sched("s2"))
    # The limit is per job; deleting one makes room.
    await scheduler_store.schedule_insert(new_schedule(sched("s0", "other"), now, now), 2)
    await scheduler_store.schedule_delete(sched("s0"))
    await scheduler_store.schedule_insert(new_schedule(sched("s2"), now, now), 2)
    listed = await scheduler_store.schedule_list(NS, "nightly", "", 10)
    assert [s.ref.schedule_id for s in listed] == ["s1", "s2"]


async def test_schedule_get_of_an_unknown_schedule(
    scheduler_store: SchedulerStore, clock: ManualClock
) -> None:
    await add_job(scheduler_store, NS, "nightly", clock.now())
    with pytest.raises(ScheduleNotFound):
        await scheduler_store.schedule_get(sched("missing"))
    assert await scheduler_store.schedule_get_by_uid(uuid.uuid4()) is None


async def test_schedule_list_pages_by_job_and_id_and_filters_by_job(
    scheduler_store: SchedulerStore, clock: ManualClock
) -> None:
    now = clock.now()
    for job_id in ("b", "a"):
        await add_job(scheduler_store, NS, job_id, now)
        for schedule_id in ("y", "x"):
            await add_schedule(scheduler_store, sched(schedule_id, job_id), now, now)
    await add_job(scheduler_store, f"{NS}-b", "a", now)
    await add_schedule(scheduler_store, ScheduleRef(f"{NS}-b", "a", "w"), now, now)
    first = await scheduler_store.schedule_list(NS, None, "", 3)
    keys = [(s.ref.job_id, s.ref.schedule_id) for s in first]
    assert keys == [("a", "x"), ("a", "y"), ("b", "x")]
    rest = await scheduler_store.schedule_list(NS, None, "b/x", 3)
    assert [(s.ref.job_id, s.ref.schedule_id) for s in rest] == [("b", "y")]
    of_b = await scheduler_store.schedule_list(NS, "b", "", 10)
    assert [(s.ref.job_id, s.ref.schedule_id) for s in of_b] == [("b", "x"), ("b", "y")]
    assert await scheduler_store.schedule_list(NS, "none", "", 10) == []


async def test_schedule_list_on_event_gives_unpaused_event_schedules_in_uid_order(
    scheduler_store: SchedulerStore, clock: ManualClock
) -> None:
    now = clock.now()
    await add_job(scheduler_store, NS, "nightly", now)
    armed = [
        await add_schedule(scheduler_store, sched(f"e{i}"), now, None, spec=on_event())
        for i in range(3)
    ]
    await add_schedule(scheduler_store, sched("paused"), now, None, spec=on_event(), paused=True)
    await add_schedule(scheduler_store, sched("timed"), now, now)
    # It spans namespaces: this test's part of the answer, in its order.
    listed = await scheduler_store.schedule_list_on_event(10_000)
    mine = [s for s in listed if s.ref.namespace == NS]
    assert [s.uid for s in mine] == sorted(s.uid for s in armed)
    assert [s.uid for s in listed] == sorted(s.uid for s in listed)
    assert all(s.spec == on_event() for s in mine)
    assert await scheduler_store.schedule_list_on_event(2) == listed[:2]


async def test_schedule_update_replaces_spec_policy_and_timing_and_keeps_the_rest(
    scheduler_store: SchedulerStore, clock: ManualClock
) -> None:
    now = clock.now()
    await add_job(scheduler_store, NS, "nightly", now)
    before = await add_schedule(scheduler_store, sched(), now, now, paused=True)
    clock.advance(30)
    cron = ScheduleSpec(ScheduleKind.CRON, cron="0 * * * *", time_zone="Europe/Paris")
    policy = SchedulePolicy(OverlapPolicy.ALLOW_ALL, CatchUpMode.FIRE_ONCE, timedelta(0))
    due = now + timedelta(hours=1)
    new = NewSchedule(uuid.uuid4(), sched(), cron, policy, due, due, clock.now())
    after = await scheduler_store.schedule_update(new)
    assert (after.uid, after.paused, after.created_at) == (before.uid, True, before.created_at)
    assert (after.spec, after.policy) == (cron, policy)
    assert (after.next_slot_at, after.next_fire_at, after.updated_at) == (due, due, clock.now())
    assert await scheduler_store.schedule_get(sched()) == after
    with pytest.raises(ScheduleNotFound):
        await scheduler_store.schedule_update(new_schedule(sched("missing"), now, now))


async def test_schedule_delete_removes_it_with_its_fires_and_decisions(
    scheduler_store: SchedulerStore, clock: ManualClock
) -> None:
    now = clock.now()
    await add_job(scheduler_store, NS, "nightly", now)
    gone = await add_schedule(scheduler_store, sched(), now, now)
    kept = await add_schedule(scheduler_store, sched("kept"), now, now)
    for schedule in (gone, kept):
        await scheduler_store.fire_insert_many(schedule.uid, [fire_write(schedule, now, now)])
        await scheduler_store.decision_insert(decision(schedule.uid), now)
    await scheduler_store.schedule_delete(sched())
    with pytest.raises(ScheduleNotFound):
        await scheduler_store.schedule_get(sched())
    assert await scheduler_store.fire_list(gone.uid, 0, 10) == []
    assert await scheduler_store.decision_list(gone.uid, 0, 10) == []
    assert len(await scheduler_store.fire_list(kept.uid, 0, 10)) == 1
    assert len(await scheduler_store.decision_list(kept.uid, 0, 10)) == 1
    with pytest.raises(ScheduleNotFound):
        await scheduler_store.schedule_delete(sched())


async def test_schedule_set_paused_sets_the_flag_and_the_timing_given(
    scheduler_store: SchedulerStore, clock: ManualClock
) -> None:
    now = clock.now()
    await add_job(scheduler_store, NS, "nightly", now)
    await add_schedule(scheduler_store, sched(), now, now)
    clock.advance(5)
    later = now + timedelta(minutes=2)
    timing = ScheduleTiming(later, later + timedelta(seconds=1), 2, ("load",))
    paused = await scheduler_store.schedule_set_paused(sched(), True, timing, clock.now())
    assert paused.paused and paused.updated_at == clock.now()
    assert (paused.next_slot_at, paused.next_fire_at) == (later, later + timedelta(seconds=1))
    assert (paused.backoff_level, paused.next_endpoints) == (2, ("load",))
    assert await scheduler_store.schedule_get(sched()) == paused
    # Without a backoff level or endpoints, those are kept.
    resumed = await scheduler_store.schedule_set_paused(
        sched(), False, ScheduleTiming(None, None), clock.now()
    )
    assert not resumed.paused and resumed.next_fire_at is None
    assert (resumed.backoff_level, resumed.next_endpoints) == (2, ("load",))
    with pytest.raises(ScheduleNotFound):
        await scheduler_store.schedule_set_paused(sched("missing"), True, timing, clock.now())


async def test_schedule_set_timing_applies_and_tells_whether_it_did(
    scheduler_store: SchedulerStore, clock: ManualClock
) -> None:
    now = clock.now()
    await add_job(scheduler_store, NS, "nightly", now)
    schedule = await add_schedule(scheduler_store, sched(), now, None, spec=on_event())
    clock.advance(1)
    due = clock.now() + timedelta(seconds=5)
    armed = ScheduleTiming(due, due, pending_since=clock.now())
    assert await scheduler_store.schedule_set_timing(
        schedule.uid, armed, clock.now(), only_if_idle=True
    )
    stored = await scheduler_store.schedule_get(sched())
    assert (stored.next_slot_at, stored.next_fire_at, stored.updated_at) == (due, due, clock.now())
    # Already due: an idle-only arming leaves it; an unconditional one applies.
    later = ScheduleTiming(due + EVERY, due + EVERY, backoff_level=1)
    assert not await scheduler_store.schedule_set_timing(
        schedule.uid, later, clock.now(), only_if_idle=True
    )
    assert (await scheduler_store.schedule_get(sched())).next_fire_at == due
    assert await scheduler_store.schedule_set_timing(schedule.uid, later, clock.now())
    stored = await scheduler_store.schedule_get(sched())
    assert (stored.next_fire_at, stored.backoff_level) == (due + EVERY, 1)
    assert not await scheduler_store.schedule_set_timing(uuid.uuid4(), later, clock.now())


# -- decisions and the journal --------------------------------------------------------


def decision(uid: uuid.UUID, reason: str = "backed off", **details: object) -> NewDecision:
    return NewDecision(uid, None, "backoff", None, 1, reason, dict(details))


async def test_decisions_are_listed_newest_first_with_their_details(
    scheduler_store: SchedulerStore, clock: ManualClock
) -> None:
    now = clock.now()
    await add_job(scheduler_store, NS, "nightly", now)
    schedule = await add_schedule(scheduler_store, sched(), now, now)
    other = await add_schedule(scheduler_store, sched("other"), now, now)
    [write] = await scheduler_store.fire_insert_many(schedule.uid, [fire_write(schedule, now, now)])
    due = now + timedelta(minutes=4)
    advised = NewDecision(
        schedule.uid,
        write.fire.id,
        "advisor",
        due,
        3,
        "the advisor chose fetch",
        {
            "endpoints": ["fetch"],
            "classifications": ["network"],
            "repair_attempts": 1,
            "salvaged": True,
            "input_tokens": 120,
            "output_tokens": 30,
            "fallback_reason": "slow",
        },
    )
    await scheduler_store.decision_insert(decision(schedule.uid, "first"), now)
    clock.advance(1)
    await scheduler_store.decision_insert(advised, clock.now())
    await scheduler_store.decision_insert(decision(other.uid, "elsewhere"), clock.now())
    newest, oldest = await scheduler_store.decision_list(schedule.uid, 0, 10)
    assert (newest.schedule, newest.policy, newest.fire_id) == (sched(), "advisor", write.fire.id)
    assert (newest.next_fire_at, newest.backoff_level, newest.created_at) == (due, 3, clock.now())
    assert (newest.endpoints, newest.classifications) == (("fetch",), ("network",))
    assert (newest.repair_attempts, newest.salvaged, newest.fallback_reason) == (1, True, "slow")
    assert (newest.input_tokens, newest.output_tokens) == (120, 30)
    assert (oldest.reason, oldest.fire_id, oldest.endpoints) == ("first", None, ())
    assert newest.seq > oldest.seq


async def test_decision_list_pages_before_a_seq_and_knows_no_unknown_schedule(
    scheduler_store: SchedulerStore, clock: ManualClock
) -> None:
    now = clock.now()
    await add_job(scheduler_store, NS, "nightly", now)
    schedule = await add_schedule(scheduler_store, sched(), now, now)
    for i in range(3):
        await scheduler_store.decision_insert(decision(schedule.uid, f"d{i}"), now)
    first = await scheduler_store.decision_list(schedule.uid, 0, 2)
    assert [d.reason for d in first] == ["d2", "d1"]
    rest = await scheduler_store.decision_list(schedule.uid, first[-1].seq, 2)
    assert [d.reason for d in rest] == ["d0"]
    assert await scheduler_store.decision_list(uuid.uuid4(), 0, 10) == []


async def test_journal_insert_writes_one_record_to_relay(
    scheduler_store: SchedulerStore, clock: ManualClock, scheduler_journal: SqlJournalOutbox
) -> None:
    before = await scheduler_journal.undelivered_count()
    entry = JournalEntry(
        "scheduler.job.run",
        NS,
        {"job": job().name, "work_order": "w1"},
        {"job_version": "2"},
        "corr-run",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )
    await scheduler_store.journal_insert(entry, clock.now())
    assert await scheduler_journal.undelivered_count() == before + 1
    async with scheduler_journal.claim(10_000) as batch:
        [record] = [r for r in batch.records if r.namespace == NS]
    assert (record.type, record.time, record.correlation_id) == (
        "scheduler.job.run",
        clock.now(),
        "corr-run",
    )
    assert (record.subjects, record.attributes) == (entry.subjects, entry.attributes)
    assert record.trace_id == "0af7651916cd43dd8448eb211c80319c"
