"""Conformance of SchedulerStore (services/scheduler/store/base.py), part two: the
firing tick, manual fires and fire history, on every backend, through the Protocol
alone, with the time from a manual clock. Outcomes and the outbox:
test_scheduler_store_outcomes.

The tick and the outbox claim span namespaces (the module shares one database): each
test asserts on its own part of their answers, and its plan leaves other tests' due
schedules as they are.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Collection, Sequence
from datetime import UTC, datetime, timedelta

import pytest

from conveyor_core.clock import ManualClock
from conveyor_scheduler.domain.model import FireKind, FireOutcome, JobRef, ScheduleRef
from conveyor_scheduler.store.base import (
    ActiveFire,
    DueSchedule,
    FencingTokenStale,
    FireFinish,
    FirePlan,
    FireTickParams,
    FireWrite,
    SchedulerStore,
    ScheduleTiming,
    Submit,
)
from conveyor_scheduler.store.outbox import SqlJournalOutbox
from tests.store.scheduler_data import (
    ALL,
    EVERY,
    add_job,
    add_schedule,
    deliver,
    fire_write,
    fired,
    fires_of,
    outbox,
    queue_of,
)

NS = "conformance"  # rebound per test (conftest's namespace fixture): a module shares one database


def sched(schedule_id: str) -> ScheduleRef:
    return ScheduleRef(NS, "nightly", schedule_id)


class Planner:
    """The engine's part of a tick, scripted: each due schedule of this test fires its
    slot and moves one interval on (`step` None: disarmed), with the cancels given;
    `fail` schedules make the plan raise. Other tests' schedules are left as they are."""

    def __init__(
        self,
        now: datetime,
        step: timedelta | None = EVERY,
        fail: Collection[uuid.UUID] = (),
        cancels: Sequence[Submit] = (),
    ) -> None:
        self.now, self.step, self.fail, self.cancels = now, step, fail, cancels
        self.seen: list[DueSchedule] = []

    def __call__(self, due: DueSchedule) -> FirePlan:
        schedule = due.schedule
        if schedule.ref.namespace != NS:
            keep = (schedule.next_slot_at, schedule.next_fire_at, None, schedule.next_endpoints)
            return FirePlan((), ScheduleTiming(*keep))
        self.seen.append(due)
        if schedule.uid in self.fail:
            raise ValueError("this schedule cannot be planned")
        assert schedule.next_slot_at is not None
        then = None if self.step is None else schedule.next_slot_at + self.step
        write = fire_write(schedule, schedule.next_slot_at, self.now)
        return FirePlan([write], ScheduleTiming(then, then), self.cancels)

    def seen_uids(self) -> list[uuid.UUID]:
        return [d.schedule.uid for d in self.seen]


async def tick(
    store: SchedulerStore,
    clock: ManualClock,
    planner: Planner,
    token: int = 1,
    *,
    limit: int = ALL,
    lease: str = "",
    poisoned: list[str] | None = None,
) -> list[FireWrite]:
    """One tick at the clock's time; this test's part of what it wrote."""
    told = poisoned if poisoned is not None else []
    params = FireTickParams(
        clock.now(),
        limit,
        lease or f"lease-{NS}",
        token,
        planner,
        poisoned=lambda name, error: told.append(name),
    )
    return [w for w in await store.fire_tick(params) if w.fire.schedule.namespace == NS]


# -- the firing tick ------------------------------------------------------------------


async def test_tick_fires_only_the_due_unpaused_schedules_at_the_clocks_time(
    scheduler_store: SchedulerStore, clock: ManualClock, scheduler_journal: SqlJournalOutbox
) -> None:
    now = clock.now()
    await add_job(scheduler_store, NS, "nightly", now)
    due = await add_schedule(scheduler_store, sched("due"), now, now)
    late = await add_schedule(scheduler_store, sched("late"), now, now - timedelta(seconds=30))
    soon = await add_schedule(scheduler_store, sched("soon"), now, now + timedelta(seconds=1))
    await add_schedule(scheduler_store, sched("paused"), now, now, paused=True)
    await add_schedule(scheduler_store, sched("idle"), now, None)
    journal = await scheduler_journal.undelivered_count()
    planner = Planner(now)
    written = await tick(scheduler_store, clock, planner, 7)
    assert planner.seen_uids() == [late.uid, due.uid]  # earliest due first
    assert [w.fire.schedule_uid for w in written] == [late.uid, due.uid]
    assert await fires_of(scheduler_store, due.uid) == [written[1].fire]
    moved = await scheduler_store.schedule_get(due.ref)
    assert (moved.next_slot_at, moved.next_fire_at, moved.updated_at) == (now + EVERY,) * 2 + (now,)
    rows = await outbox(scheduler_store, NS)
    assert [(r.fire_id, r.fencing_token) for r in rows] == [(w.fire.id, 7) for w in written]
    assert await scheduler_journal.undelivered_count() == journal + 2

    clock.advance(1)
    planner = Planner(clock.now())
    assert [w.fire.schedule_uid for w in await tick(scheduler_store, clock, planner, 7)] == [
        soon.uid
    ]
    assert planner.seen_uids() == [soon.uid]


async def test_tick_hands_the_plan_the_latest_job_and_the_schedules_waiting_fires(
    scheduler_store: SchedulerStore, clock: ManualClock
) -> None:
    now = clock.now()
    job = await add_job(scheduler_store, NS, "nightly", now)
    await scheduler_store.job_update(JobRef(NS, "nightly"), job.definition, 1, now)
    schedule = await add_schedule(scheduler_store, sched("due"), now, now)
    earlier = [now - EVERY * i for i in (4, 3, 2, 1)]
    outcomes = [FireOutcome.PENDING, FireOutcome.PENDING, FireOutcome.BUFFERED, FireOutcome.SKIPPED]
    writes = [fire_write(schedule, at, now, o) for at, o in zip(earlier, outcomes, strict=True)]
    await scheduler_store.fire_insert_many(schedule.uid, writes)
    await deliver(scheduler_store, NS, now, writes[0])
    planner = Planner(now)
    await tick(scheduler_store, clock, planner)
    [seen] = planner.seen
    assert seen.schedule == schedule and seen.job.version == 2
    order = f"{queue_of(NS)}/workOrders/{writes[0].fire.id}"
    assert set(seen.active) == {
        ActiveFire(writes[0].fire.id, FireOutcome.SUBMITTED, order),
        ActiveFire(writes[1].fire.id, FireOutcome.PENDING, ""),
    }
    assert seen.buffered == 1


async def test_tick_skips_a_schedule_paused_since_and_fires_it_once_resumed(
    scheduler_store: SchedulerStore, clock: ManualClock
) -> None:
    now = clock.now()
    await add_job(scheduler_store, NS, "nightly", now)
    schedule = await add_schedule(scheduler_store, sched("due"), now, now)
    keep = ScheduleTiming(now, now)
    await scheduler_store.schedule_set_paused(schedule.ref, True, keep, now)
    paused = Planner(now)
    assert await tick(scheduler_store, clock, paused) == []
    assert paused.seen == []
    clock.advance(EVERY)
    resume = ScheduleTiming(clock.now(), clock.now())
    await scheduler_store.schedule_set_paused(schedule.ref, False, resume, clock.now())
    [write] = await tick(scheduler_store, clock, Planner(clock.now()))
    assert (write.fire.schedule_uid, write.fire.slot_at) == (schedule.uid, clock.now())


async def test_tick_takes_at_most_limit_schedules_earliest_due_first(
    scheduler_store: SchedulerStore, clock: ManualClock
) -> None:
    # Due in 2001: before anything other tests of the module leave due (2029 on).
    early = datetime(2001, 1, 1, tzinfo=UTC)
    await add_job(scheduler_store, NS, "nightly", clock.now())
    made = [
        await add_schedule(scheduler_store, sched(f"s{i}"), clock.now(), early + EVERY * i)
        for i in (2, 0, 1)
    ]
    first = Planner(clock.now(), step=None)
    assert len(await tick(scheduler_store, clock, first, limit=2)) == 2
    assert first.seen_uids() == [made[1].uid, made[2].uid]
    second = Planner(clock.now(), step=None)
    await tick(scheduler_store, clock, second, limit=2)
    assert second.seen_uids() == [made[0].uid]


async def test_tick_with_a_stale_fencing_token_raises_and_writes_nothing(
    scheduler_store: SchedulerStore, clock: ManualClock
) -> None:
    now = clock.now()
    await add_job(scheduler_store, NS, "nightly", now)
    schedule = await add_schedule(scheduler_store, sched("due"), now, now)
    assert len(await tick(scheduler_store, clock, Planner(now), 5)) == 1
    clock.advance(EVERY)
    stale = Planner(clock.now())
    with pytest.raises(FencingTokenStale):
        await tick(scheduler_store, clock, stale, 4)
    assert stale.seen == [] and len(await fires_of(scheduler_store, schedule.uid)) == 1
    assert (await scheduler_store.schedule_get(schedule.ref)).next_fire_at == clock.now()
    # The same leader again, and a newer one, fire; tokens are per lease name.
    assert len(await tick(scheduler_store, clock, Planner(clock.now()), 5)) == 1
    clock.advance(EVERY)
    assert len(await tick(scheduler_store, clock, Planner(clock.now()), 6)) == 1
    clock.advance(EVERY)
    other_lease = f"other-{NS}"
    assert len(await tick(scheduler_store, clock, Planner(clock.now()), 1, lease=other_lease)) == 1
    assert len(await fires_of(scheduler_store, schedule.uid)) == 4


async def test_tick_leaves_out_a_slot_already_fired_and_writes_cancels(
    scheduler_store: SchedulerStore, clock: ManualClock, scheduler_journal: SqlJournalOutbox
) -> None:
    now = clock.now()
    await add_job(scheduler_store, NS, "nightly", now)
    schedule = await add_schedule(scheduler_store, sched("due"), now, now)
    trigger = fire_write(schedule, now, now, kind=FireKind.TRIGGERED)
    await scheduler_store.fire_insert_many(schedule.uid, [trigger])
    journal = await scheduler_journal.undelivered_count()
    cancel = Submit(f"{queue_of(NS)}/workOrders/older", action="cancel", correlation_id="c")
    planner = Planner(now, cancels=[cancel])
    assert await tick(scheduler_store, clock, planner, 3) == []
    assert await fires_of(scheduler_store, schedule.uid) == [trigger.fire]
    assert await scheduler_journal.undelivered_count() == journal
    assert (await scheduler_store.schedule_get(schedule.ref)).next_fire_at == now + EVERY
    [submit, cancelled] = await outbox(scheduler_store, NS)
    assert submit.fire_id == trigger.fire.id
    assert (cancelled.action, cancelled.parent, cancelled.fencing_token) == (
        "cancel",
        cancel.parent,
        3,
    )


async def test_tick_pauses_a_schedule_whose_plan_raises_and_fires_the_rest(
    scheduler_store: SchedulerStore, clock: ManualClock
) -> None:
    now = clock.now()
    await add_job(scheduler_store, NS, "nightly", now)
    bad = await add_schedule(scheduler_store, sched("bad"), now, now - timedelta(seconds=1))
    good = await add_schedule(scheduler_store, sched("good"), now, now)
    told: list[str] = []
    written = await tick(scheduler_store, clock, Planner(now, fail={bad.uid}), poisoned=told)
    assert [w.fire.schedule_uid for w in written] == [good.uid]
    assert [name for name in told if f"/{NS}/" in name] == [bad.ref.name]
    paused = await scheduler_store.schedule_get(bad.ref)
    assert paused.paused and await fires_of(scheduler_store, bad.uid) == []
    [decision] = await scheduler_store.decision_list(bad.uid, 0, 10)
    assert decision.policy == "quarantined" and "cannot be planned" in decision.reason
    # Paused, it is due no more.
    planner = Planner(now)
    await tick(scheduler_store, clock, planner)
    assert planner.seen == []


async def test_concurrent_ticks_fire_each_due_slot_once(
    scheduler_store: SchedulerStore, clock: ManualClock
) -> None:
    now = clock.now()
    await add_job(scheduler_store, NS, "nightly", now)
    made = [await add_schedule(scheduler_store, sched(f"s{i}"), now, now) for i in range(4)]
    planners = [Planner(now), Planner(now)]
    results = await asyncio.gather(*(tick(scheduler_store, clock, p, 2) for p in planners))
    assert sorted(w.fire.schedule_uid for r in results for w in r) == sorted(s.uid for s in made)
    for schedule in made:
        assert len(await fires_of(scheduler_store, schedule.uid)) == 1


# -- manual fires and history ---------------------------------------------------------


async def test_fire_insert_many_writes_fires_submits_and_journal_once_per_slot(
    scheduler_store: SchedulerStore, clock: ManualClock, scheduler_journal: SqlJournalOutbox
) -> None:
    now = clock.now()
    journal = await scheduler_journal.undelivered_count()
    slots = [now - EVERY, now]
    written = await fired(scheduler_store, NS, now, *slots)
    assert [w.fire.slot_at for w in written] == slots
    assert await scheduler_journal.undelivered_count() == journal + 2
    rows = await outbox(scheduler_store, NS)
    for row, write in zip(rows, written, strict=True):
        assert write.submit is not None
        assert (row.fire_id, row.action, row.parent, row.request) == (
            write.fire.id,
            "submit",
            queue_of(NS),
            write.submit.request,
        )
        assert (row.correlation_id, row.traceparent) == (
            write.fire.correlation_id,
            "00-trace-span-01",
        )
        assert (row.fencing_token, row.slot_at) == (0, write.fire.slot_at)
    schedule = await scheduler_store.schedule_get(sched("manual"))
    again = [fire_write(schedule, at, now) for at in (now, now + EVERY)]
    assert await scheduler_store.fire_insert_many(schedule.uid, again) == again[1:]
    assert await scheduler_store.fire_insert_many(schedule.uid, []) == []
    assert len(await outbox(scheduler_store, NS)) == 3


async def test_fire_insert_many_holds_a_buffered_submit_and_writes_none_for_a_skip(
    scheduler_store: SchedulerStore, clock: ManualClock, scheduler_journal: SqlJournalOutbox
) -> None:
    now = clock.now()
    await add_job(scheduler_store, NS, "nightly", now)
    schedule = await add_schedule(scheduler_store, sched("s"), now, None)
    journal = await scheduler_journal.undelivered_count()
    skipped = fire_write(schedule, now - EVERY, now, FireOutcome.SKIPPED)
    buffered = fire_write(schedule, now, now, FireOutcome.BUFFERED)
    assert await scheduler_store.fire_insert_many(schedule.uid, [skipped, buffered]) == [
        skipped,
        buffered,
    ]
    assert await fires_of(scheduler_store, schedule.uid) == [buffered.fire, skipped.fire]
    assert await scheduler_journal.undelivered_count() == journal + 2
    assert await outbox(scheduler_store, NS) == []  # held until the schedule's fire ends


async def test_fire_list_pages_newest_slot_first_and_recent_gives_the_first_page(
    scheduler_store: SchedulerStore, clock: ManualClock
) -> None:
    now = clock.now()
    written = await fired(scheduler_store, NS, now, now, now - EVERY * 2, now - EVERY)
    uid = written[0].fire.schedule_uid
    other = await add_schedule(scheduler_store, sched("other"), now, None)
    await scheduler_store.fire_insert_many(other.uid, [fire_write(other, now, now)])
    newest_first = [written[0].fire, written[2].fire, written[1].fire]
    page = await scheduler_store.fire_list(uid, 0, 2)
    assert [fire for _, fire in page] == newest_first[:2]
    rest = await scheduler_store.fire_list(uid, page[-1][0], 2)
    assert [fire for _, fire in rest] == newest_first[2:]
    assert await scheduler_store.fire_list_recent(uid, 2) == newest_first[:2]
    assert await scheduler_store.fire_list_recent(uuid.uuid4(), 2) == []


async def test_fire_has_active_while_a_fire_may_run_or_waits(
    scheduler_store: SchedulerStore, clock: ManualClock
) -> None:
    now = clock.now()
    await add_job(scheduler_store, NS, "nightly", now)
    schedule = await add_schedule(scheduler_store, sched("s"), now, None)
    assert not await scheduler_store.fire_has_active(schedule.uid)
    skipped = fire_write(schedule, now - EVERY, now, FireOutcome.SKIPPED)
    await scheduler_store.fire_insert_many(schedule.uid, [skipped])
    assert not await scheduler_store.fire_has_active(schedule.uid)
    [pending] = await scheduler_store.fire_insert_many(
        schedule.uid, [fire_write(schedule, now, now)]
    )
    assert await scheduler_store.fire_has_active(schedule.uid)
    await scheduler_store.fire_finish(FireFinish(pending.fire.id, FireOutcome.SUCCEEDED, now))
    assert not await scheduler_store.fire_has_active(schedule.uid)
    # A buffered fire waits to fire: it counts too.
    waiting = await add_schedule(scheduler_store, sched("waiting"), now, None)
    buffered = fire_write(waiting, now, now, FireOutcome.BUFFERED)
    await scheduler_store.fire_insert_many(waiting.uid, [buffered])
    assert await scheduler_store.fire_has_active(waiting.uid)
