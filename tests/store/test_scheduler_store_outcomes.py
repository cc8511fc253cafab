"""Conformance of SchedulerStore (services/scheduler/store/base.py), part three: fire
outcomes (the active-fire sweep, running, finish, buffered release) and the submit
outbox, on every backend, through the Protocol alone, with the time from a manual clock.

The sweep and the outbox claim span namespaces (the module shares one database): each
test asserts on its own part of their answers.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from conveyor_core.clock import ManualClock
from conveyor_scheduler.domain.model import Fire, FireOutcome, ScheduleRef
from conveyor_scheduler.store.base import (
    Delivery,
    DueSchedule,
    FireFinish,
    FirePlan,
    FireTickParams,
    NewDecision,
    SchedulerStore,
    ScheduleTiming,
    Submit,
)
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
#: How long the sweep leaves a fire it gave before it gives it again.
RECHECK = timedelta(seconds=30)


def sched(schedule_id: str) -> ScheduleRef:
    return ScheduleRef(NS, "nightly", schedule_id)


# -- outcomes -------------------------------------------------------------------------


async def sweep(store: SchedulerStore, clock: ManualClock, limit: int = ALL) -> list[Fire]:
    """One pass of the outcome poller at the clock's time (recheck after RECHECK): this
    test's part of every batch until the sweep runs dry."""
    swept: list[Fire] = []
    for _ in range(100):  # far more passes than the module has active fires
        now = clock.now()
        batch = await store.fire_list_active(now, limit, now - RECHECK)
        if not batch:
            return swept
        assert len(batch) <= limit
        swept += [fire for fire in batch if fire.schedule.namespace == NS]
    pytest.fail("the sweep never ran dry: the fires it gave came again at once")


async def test_fire_list_active_gives_submitted_and_running_fires_once_a_recheck(
    scheduler_store: SchedulerStore, clock: ManualClock
) -> None:
    now = clock.now()
    _pending, submitted, running, done = await fired(  # pending: never swept
        scheduler_store, NS, now, *(now - EVERY * i for i in range(4))
    )
    await deliver(scheduler_store, NS, now, submitted, running, done)
    await scheduler_store.fire_set_running([running.fire.id], now)
    await scheduler_store.fire_finish(FireFinish(done.fire.id, FireOutcome.SUCCEEDED, now))
    swept = await sweep(scheduler_store, clock, limit=2)
    assert sorted(f.id for f in swept) == sorted([submitted.fire.id, running.fire.id])
    assert {f.id: f.outcome for f in swept}[running.fire.id] is FireOutcome.RUNNING
    # Checked at `now`: not again until RECHECK has passed.
    clock.advance(RECHECK / 2)
    assert await sweep(scheduler_store, clock) == []
    clock.advance(RECHECK)
    assert {f.id for f in await sweep(scheduler_store, clock)} == {f.id for f in swept}


async def test_fire_list_active_gives_the_least_recently_checked_first(
    scheduler_store: SchedulerStore, clock: ManualClock
) -> None:
    now = clock.now()
    old, new = await fired(scheduler_store, NS, now, now - EVERY, now)
    await deliver(scheduler_store, NS, now, old)
    assert [f.id for f in await sweep(scheduler_store, clock)] == [old.fire.id]
    clock.advance(RECHECK * 2)
    await deliver(scheduler_store, NS, clock.now(), new)  # never checked yet
    assert [f.id for f in await sweep(scheduler_store, clock)] == [new.fire.id, old.fire.id]


async def test_fire_set_running_moves_submitted_fires_only(
    scheduler_store: SchedulerStore, clock: ManualClock
) -> None:
    now = clock.now()
    pending, submitted, done = await fired(
        scheduler_store, NS, clock.now(), now, now - EVERY, now - EVERY * 2
    )
    await deliver(scheduler_store, NS, now, submitted, done)
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
    [write] = await fired(scheduler_store, NS, now, now)
    await deliver(scheduler_store, NS, now, write)
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
    await scheduler_store.fire_finish(FireFinish(uuid.uuid4(), FireOutcome.FAILED, clock.now()))


async def test_fire_finish_releases_the_oldest_buffered_fire_and_its_held_submit(
    scheduler_store: SchedulerStore, clock: ManualClock
) -> None:
    now = clock.now()
    await add_job(scheduler_store, NS, "nightly", now)
    schedule = await add_schedule(scheduler_store, sched("s"), now, None)
    running = fire_write(schedule, now - EVERY * 2, now)
    buffered = [fire_write(schedule, now - EVERY * i, now, FireOutcome.BUFFERED) for i in (0, 1)]
    await scheduler_store.fire_insert_many(schedule.uid, [running, *buffered])
    assert [r.fire_id for r in await outbox(scheduler_store, NS)] == [
        running.fire.id
    ]  # held: not yet
    await deliver(scheduler_store, NS, now, running)
    assert await scheduler_store.fire_has_active(schedule.uid)
    await scheduler_store.fire_finish(FireFinish(running.fire.id, FireOutcome.SUCCEEDED, now))
    outcomes = {f.id: f.outcome for f in await fires_of(scheduler_store, schedule.uid)}
    oldest, newest = buffered[1].fire.id, buffered[0].fire.id
    assert (outcomes[oldest], outcomes[newest]) == (FireOutcome.PENDING, FireOutcome.BUFFERED)
    assert [r.fire_id for r in await outbox(scheduler_store, NS)] == [oldest]


# -- the submit outbox ----------------------------------------------------------------


async def test_outbox_claim_gives_undelivered_rows_in_order_until_marked(
    scheduler_store: SchedulerStore, clock: ManualClock
) -> None:
    now = clock.now()
    written = await fired(scheduler_store, NS, now, *(now - EVERY * i for i in range(3)))
    rows = await outbox(scheduler_store, NS)
    assert [r.fire_id for r in rows] == [w.fire.id for w in written]
    assert [r.seq for r in rows] == sorted(r.seq for r in rows)
    # A claim marks nothing: a row not marked delivered comes again (at least once).
    assert await outbox(scheduler_store, NS) == rows
    everything = await scheduler_store.submit_outbox_claim(ALL)
    assert await scheduler_store.submit_outbox_claim(2) == everything[:2]
    await scheduler_store.submit_outbox_mark(
        [Delivery(rows[0].seq, rows[0].fire_id, "submit", "w")], now
    )
    assert await outbox(scheduler_store, NS) == rows[1:]
    await scheduler_store.submit_outbox_mark([], now)
    assert await outbox(scheduler_store, NS) == rows[1:]


async def test_outbox_mark_records_each_submit_on_its_pending_fire(
    scheduler_store: SchedulerStore, clock: ManualClock
) -> None:
    now = clock.now()
    ok, refused, cancelled = await fired(
        scheduler_store, NS, clock.now(), now, now - EVERY, now - EVERY * 2
    )
    await scheduler_store.fire_finish(FireFinish(cancelled.fire.id, FireOutcome.CANCELLED, now))
    rows = {r.fire_id: r for r in await outbox(scheduler_store, NS)}
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
    assert await outbox(scheduler_store, NS) == []
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


async def test_outbox_mark_of_a_cancel_marks_its_row_and_no_fire(
    scheduler_store: SchedulerStore, clock: ManualClock
) -> None:
    now = clock.now()
    await add_job(scheduler_store, NS, "nightly", now)
    schedule = await add_schedule(scheduler_store, sched("due"), now, now)
    old = fire_write(schedule, now - EVERY, now)
    await scheduler_store.fire_insert_many(schedule.uid, [old])
    await deliver(scheduler_store, NS, now, old)
    cancel = Submit(f"{queue_of(NS)}/workOrders/{old.fire.id}", action="cancel")

    def plan(due: DueSchedule) -> FirePlan:
        keep = ScheduleTiming(due.schedule.next_slot_at, due.schedule.next_fire_at)
        mine = due.schedule.uid == schedule.uid
        return FirePlan((), ScheduleTiming(None, None) if mine else keep, [cancel] if mine else [])

    await scheduler_store.fire_tick(FireTickParams(now, ALL, f"lease-{NS}", 1, plan))
    [row] = await outbox(scheduler_store, NS)
    assert (row.action, row.parent) == ("cancel", cancel.parent)
    await scheduler_store.submit_outbox_mark([Delivery(row.seq, row.fire_id, "cancel")], now)
    assert await outbox(scheduler_store, NS) == []
    [stored] = await fires_of(scheduler_store, schedule.uid)
    assert (stored.outcome, stored.work_order) == (FireOutcome.SUBMITTED, cancel.parent)
