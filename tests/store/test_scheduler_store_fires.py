"""Conformance of SchedulerStore (services/scheduler/store/base.py), part two: the
firing tick, manual fires, fire history and outcomes, and the submit outbox, on every
backend, through the Protocol alone, with the time from a manual clock.

The tick, the active-fire sweep and the outbox claim span namespaces (the module
shares one database): each test asserts on its own part of their answers, and its
plan leaves other tests' due schedules as they are.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import Collection, Sequence
from datetime import UTC, datetime, timedelta

import pytest

from conveyor_core.clock import ManualClock
from conveyor_scheduler.domain.model import Fire, FireKind, FireOutcome, JobRef, ScheduleRef
from conveyor_scheduler.store.base import (
    ActiveFire,
    Delivery,
    DueSchedule,
    FencingTokenStale,
    FireFinish,
    FirePlan,
    FireTickParams,
    FireWrite,
    NewDecision,
    OutboxSubmit,
    SchedulerStore,
    ScheduleTiming,
    Submit,
)
from conveyor_scheduler.store.outbox import SqlJournalOutbox
from tests.store.scheduler_data import (
    EVERY,
    add_job,
    add_schedule,
    fire_write,
    queue_of,
)

NS = "conformance"  # rebound per test (namespace fixture): a module shares one database
ALL = 10_000  # a limit above anything the module writes: every row of this test comes


@pytest.fixture(autouse=True)
def namespace(monkeypatch: pytest.MonkeyPatch) -> str:
    """This test's namespace: NS names it while the test runs."""
    ns = f"c{uuid.uuid4().hex[:12]}"
    monkeypatch.setattr(sys.modules[__name__], "NS", ns)
    return ns


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


async def outbox(store: SchedulerStore) -> list[OutboxSubmit]:
    """This test's undelivered, unheld outbox rows (submits and cancels), in seq order."""
    rows = await store.submit_outbox_claim(ALL)
    return [r for r in rows if r.parent.startswith(f"namespaces/{NS}/")]


async def fires_of(store: SchedulerStore, uid: uuid.UUID) -> list[Fire]:
    return [fire for _, fire in await store.fire_list(uid, 0, ALL)]


async def deliver(store: SchedulerStore, now: datetime, *writes: FireWrite) -> None:
    """Mark the submits of `writes` delivered, each answered with an order named after it."""
    ids = {w.fire.id for w in writes}
    rows = [r for r in await outbox(store) if r.fire_id in ids]
    assert len(rows) == len(ids)
    marks = [
        Delivery(r.seq, r.fire_id, r.action, f"{r.parent}/workOrders/{r.fire_id}") for r in rows
    ]
    await store.submit_outbox_mark(marks, now)


async def fired(store: SchedulerStore, clock: ManualClock, *slots: datetime) -> list[FireWrite]:
    """A schedule ("manual", no next slot) with a pending fire at each of `slots`."""
    await add_job(store, NS, "nightly", clock.now())
    schedule = await add_schedule(store, sched("manual"), clock.now(), None)
    writes = [fire_write(schedule, slot, clock.now(), kind=FireKind.TRIGGERED) for slot in slots]
    return await store.fire_insert_many(schedule.uid, writes)


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
    rows = await outbox(scheduler_store)
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
    await deliver(scheduler_store, now, writes[0])
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
    [submit, cancelled] = await outbox(scheduler_store)
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
    written = await fired(scheduler_store, clock, *slots)
    assert [w.fire.slot_at for w in written] == slots
    assert await scheduler_journal.undelivered_count() == journal + 2
    rows = await outbox(scheduler_store)
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
    assert len(await outbox(scheduler_store)) == 3


async def test_fire_list_pages_newest_slot_first_and_recent_gives_the_first_page(
    scheduler_store: SchedulerStore, clock: ManualClock
) -> None:
    now = clock.now()
    written = await fired(scheduler_store, clock, now, now - EVERY * 2, now - EVERY)
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


# -- outcomes -------------------------------------------------------------------------


async def test_fire_list_active_sweeps_submitted_and_running_fires_least_recently_checked(
    scheduler_store: SchedulerStore, clock: ManualClock
) -> None:
    now = clock.now()
    pending, submitted, running, done = await fired(
        scheduler_store, clock, *(now - EVERY * i for i in range(4))
    )
    await deliver(scheduler_store, now, submitted, running, done)
    await scheduler_store.fire_set_running([running.fire.id], now)
    await scheduler_store.fire_finish(FireFinish(done.fire.id, FireOutcome.SUCCEEDED, now))
    recheck = timedelta(seconds=30)
    swept: list[Fire] = []
    while batch := await scheduler_store.fire_list_active(now, 2, now - recheck):
        assert len(batch) <= 2
        swept += [fire for fire in batch if fire.schedule.namespace == NS]
    assert sorted(f.id for f in swept) == sorted([submitted.fire.id, running.fire.id])
    outcomes = {f.id: f.outcome for f in swept}
    assert outcomes[running.fire.id] is FireOutcome.RUNNING
    # Checked at `now`: not again until `recheck` has passed.
    clock.advance(10)
    again = await scheduler_store.fire_list_active(clock.now(), ALL, clock.now() - recheck)
    assert [f for f in again if f.schedule.namespace == NS] == []
    clock.advance(30)
    again = await scheduler_store.fire_list_active(clock.now(), ALL, clock.now() - recheck)
    assert {f.id for f in again if f.schedule.namespace == NS} == set(outcomes)
    assert pending.fire.id not in outcomes


async def test_fire_set_running_moves_submitted_fires_only(
    scheduler_store: SchedulerStore, clock: ManualClock
) -> None:
    now = clock.now()
    pending, submitted, done = await fired(
        scheduler_store, clock, now, now - EVERY, now - EVERY * 2
    )
    await deliver(scheduler_store, now, submitted, done)
    await scheduler_store.fire_finish(FireFinish(done.fire.id, FireOutcome.FAILED, now))
    ids = [w.fire.id for w in (pending, submitted, done)]
    await scheduler_store.fire_set_running(ids, now)
    await scheduler_store.fire_set_running([], now)
    outcomes = {f.id: f.outcome for f in await fires_of(scheduler_store, pending.fire.schedule_uid)}
    assert [outcomes[i] for i in ids] == [
        FireOutcome.PENDING,
        FireOutcome.RUNNING,
        FireOutcome.FAILED,
    ]


async def test_fire_finish_records_the_end_once_with_its_schedule_changes(
    scheduler_store: SchedulerStore, clock: ManualClock
) -> None:
    now = clock.now()
    [write] = await fired(scheduler_store, clock, now)
    await deliver(scheduler_store, now, write)
    uid = write.fire.schedule_uid
    clock.advance(5)
    later = clock.now() + EVERY * 2
    finish = FireFinish(
        write.fire.id,
        FireOutcome.FAILED,
        clock.now(),
        work_found=False,
        error_type="e" * 200,
        reason="endpoint fetch answered 503",
        timing=ScheduleTiming(later, later, backoff_level=2),
        decision=NewDecision(uid, write.fire.id, "backoff", later, 2, "failed: backing off"),
    )
    await scheduler_store.fire_finish(finish)
    [stored] = await fires_of(scheduler_store, uid)
    assert (stored.outcome, stored.work_found, stored.reason) == (
        FireOutcome.FAILED,
        False,
        "endpoint fetch answered 503",
    )
    assert stored.error_type == "e" * 128 and stored.finished_at == clock.now()
    schedule = await scheduler_store.schedule_get(sched("manual"))
    assert (schedule.next_fire_at, schedule.backoff_level) == (later, 2)
    [decision] = await scheduler_store.decision_list(uid, 0, 10)
    assert (decision.fire_id, decision.reason) == (write.fire.id, "failed: backing off")
    # Recorded already: a second finish changes nothing.
    clock.advance(5)
    await scheduler_store.fire_finish(
        FireFinish(
            write.fire.id,
            FireOutcome.SUCCEEDED,
            clock.now(),
            timing=ScheduleTiming(None, None),
            decision=finish.decision,
        )
    )
    assert await fires_of(scheduler_store, uid) == [stored]
    assert (await scheduler_store.schedule_get(sched("manual"))).next_fire_at == later
    assert len(await scheduler_store.decision_list(uid, 0, 10)) == 1


async def test_fire_finish_releases_the_oldest_buffered_fire_and_its_held_submit(
    scheduler_store: SchedulerStore, clock: ManualClock
) -> None:
    now = clock.now()
    await add_job(scheduler_store, NS, "nightly", now)
    schedule = await add_schedule(scheduler_store, sched("s"), now, None)
    running = fire_write(schedule, now - EVERY * 2, now)
    buffered = [fire_write(schedule, now - EVERY * i, now, FireOutcome.BUFFERED) for i in (0, 1)]
    await scheduler_store.fire_insert_many(schedule.uid, [running, *buffered])
    assert [r.fire_id for r in await outbox(scheduler_store)] == [running.fire.id]  # held: not yet
    await deliver(scheduler_store, now, running)
    assert await scheduler_store.fire_has_active(schedule.uid)
    await scheduler_store.fire_finish(FireFinish(running.fire.id, FireOutcome.SUCCEEDED, now))
    outcomes = {f.id: f.outcome for f in await fires_of(scheduler_store, schedule.uid)}
    oldest, newest = buffered[1].fire.id, buffered[0].fire.id
    assert (outcomes[oldest], outcomes[newest]) == (FireOutcome.PENDING, FireOutcome.BUFFERED)
    assert [r.fire_id for r in await outbox(scheduler_store)] == [oldest]


# -- the submit outbox ----------------------------------------------------------------


async def test_outbox_claim_gives_undelivered_rows_in_order_until_marked(
    scheduler_store: SchedulerStore, clock: ManualClock
) -> None:
    now = clock.now()
    written = await fired(scheduler_store, clock, *(now - EVERY * i for i in range(3)))
    rows = await outbox(scheduler_store)
    assert [r.fire_id for r in rows] == [w.fire.id for w in written]
    assert [r.seq for r in rows] == sorted(r.seq for r in rows)
    # A claim marks nothing: a row not marked delivered comes again (at least once).
    assert await outbox(scheduler_store) == rows
    everything = await scheduler_store.submit_outbox_claim(ALL)
    assert await scheduler_store.submit_outbox_claim(2) == everything[:2]
    await scheduler_store.submit_outbox_mark(
        [Delivery(rows[0].seq, rows[0].fire_id, "submit", "w")], now
    )
    assert await outbox(scheduler_store) == rows[1:]
    await scheduler_store.submit_outbox_mark([], now)
    assert await outbox(scheduler_store) == rows[1:]


async def test_outbox_mark_records_each_submit_on_its_pending_fire(
    scheduler_store: SchedulerStore, clock: ManualClock
) -> None:
    now = clock.now()
    ok, refused, cancelled = await fired(scheduler_store, clock, now, now - EVERY, now - EVERY * 2)
    await scheduler_store.fire_finish(FireFinish(cancelled.fire.id, FireOutcome.CANCELLED, now))
    rows = {r.fire_id: r for r in await outbox(scheduler_store)}
    clock.advance(2)
    order = f"{queue_of(NS)}/workOrders/ok"
    deliveries = [
        Delivery(rows[ok.fire.id].seq, ok.fire.id, "submit", order),
        Delivery(
            rows[refused.fire.id].seq,
            refused.fire.id,
            "submit",
            error="bad spec",
            error_type="submit_rejected",
        ),
        Delivery(rows[cancelled.fire.id].seq, cancelled.fire.id, "submit", f"{order}-late"),
    ]
    await scheduler_store.submit_outbox_mark(deliveries, clock.now())
    assert await outbox(scheduler_store) == []
    stored = {f.id: f for f in await fires_of(scheduler_store, ok.fire.schedule_uid)}
    submitted = stored[ok.fire.id]
    assert (submitted.outcome, submitted.work_order, submitted.submitted_at) == (
        FireOutcome.SUBMITTED,
        order,
        clock.now(),
    )
    failed = stored[refused.fire.id]
    assert (failed.outcome, failed.reason, failed.error_type) == (
        FireOutcome.FAILED,
        "bad spec",
        "submit_rejected",
    )
    assert failed.finished_at == clock.now()
    # A fire that ended before its submit was delivered keeps its end.
    late = stored[cancelled.fire.id]
    assert (late.outcome, late.work_order, late.finished_at) == (FireOutcome.CANCELLED, "", now)
