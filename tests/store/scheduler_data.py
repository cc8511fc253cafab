"""What the SchedulerStore conformance suites write: jobs, schedules and fire writes.

Each helper takes the test's namespace explicitly (the suites rebind theirs per test).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from conveyor_scheduler.domain.model import (
    AdaptiveConfig,
    AdaptiveMode,
    CatchUpMode,
    Endpoint,
    Fire,
    FireKind,
    FireOutcome,
    Job,
    JobDefinition,
    JobRef,
    OverlapPolicy,
    Schedule,
    ScheduleKind,
    SchedulePolicy,
    ScheduleRef,
    ScheduleSpec,
)
from conveyor_scheduler.store.base import (
    Delivery,
    FireWrite,
    JournalEntry,
    NewSchedule,
    OutboxSubmit,
    SchedulerStore,
    Submit,
)

#: Room for every schedule a test makes (the limit has its own test).
ROOMY = 100
#: A limit above anything a module writes: every row of the test comes.
ALL = 10_000
EVERY = timedelta(seconds=60)

DEFINITION = JobDefinition(
    document=b"\x0a\x04nightly",
    queue="jobs",
    priority=3,
    adaptive=AdaptiveConfig(AdaptiveMode.BACKOFF, 2.5, timedelta(minutes=10), True),
    endpoints=(Endpoint("fetch"), Endpoint("load", ("fetch",))),
)
POLICY = SchedulePolicy(
    OverlapPolicy.BUFFER_ONE, CatchUpMode.FIRE_ALL, timedelta(minutes=2), timedelta(seconds=3)
)


def interval(anchor: datetime) -> ScheduleSpec:
    return ScheduleSpec(ScheduleKind.INTERVAL, every=EVERY, anchor=anchor)


def on_event(topic: str = "orders") -> ScheduleSpec:
    return ScheduleSpec(ScheduleKind.EVENT, topic=topic, debounce=timedelta(seconds=5))


async def add_job(store: SchedulerStore, ns: str, job_id: str, now: datetime) -> Job:
    return await store.job_insert(JobRef(ns, job_id), DEFINITION, now)


def new_schedule(
    ref: ScheduleRef,
    now: datetime,
    due: datetime | None,
    *,
    spec: ScheduleSpec | None = None,
    paused: bool = False,
) -> NewSchedule:
    """A schedule whose next slot is `due` (None: nothing scheduled), due then (no jitter)."""
    return NewSchedule(
        uuid.uuid4(), ref, spec or interval(now), POLICY, due, due, now, paused=paused
    )


async def add_schedule(
    store: SchedulerStore,
    ref: ScheduleRef,
    now: datetime,
    due: datetime | None,
    *,
    spec: ScheduleSpec | None = None,
    paused: bool = False,
) -> Schedule:
    return await store.schedule_insert(new_schedule(ref, now, due, spec=spec, paused=paused), ROOMY)


def queue_of(ns: str) -> str:
    return f"namespaces/{ns}/queues/jobs"


def fire_write(
    schedule: Schedule,
    slot: datetime,
    now: datetime,
    outcome: FireOutcome = FireOutcome.PENDING,
    kind: FireKind = FireKind.SCHEDULED,
) -> FireWrite:
    """One slot's fire as the engine writes it: a submit when it fires (held when
    buffered), and its journal record."""
    ns = schedule.ref.namespace
    correlation = f"corr-{uuid.uuid4().hex[:8]}"
    fire = Fire(
        id=uuid.uuid4(),
        schedule_uid=schedule.uid,
        schedule=schedule.ref,
        kind=kind,
        outcome=outcome,
        slot_at=slot,
        fired_at=now,
        job_version=1,
        reason=kind.value,
        endpoints=("fetch",),
        correlation_id=correlation,
    )
    fires = outcome in (FireOutcome.PENDING, FireOutcome.BUFFERED)
    submit = None
    if fires:
        request = f"spec {fire.id}".encode()
        submit = Submit(queue_of(ns), request, "submit", correlation, "00-trace-span-01", slot)
    journal = JournalEntry(
        "scheduler.schedule.fired" if fires else "scheduler.slot.skipped",
        ns,
        {"schedule": schedule.ref.name, "fire": str(fire.id)},
        {"slot_time": slot.isoformat()},
        correlation,
    )
    return FireWrite(fire, submit, journal, held=outcome is FireOutcome.BUFFERED)


async def fired(store: SchedulerStore, ns: str, now: datetime, *slots: datetime) -> list[FireWrite]:
    """Job "nightly" with a schedule "manual" (no next slot) with a pending fire at each of
    `slots`, as a trigger writes them."""
    await add_job(store, ns, "nightly", now)
    schedule = await add_schedule(store, ScheduleRef(ns, "nightly", "manual"), now, None)
    writes = [fire_write(schedule, slot, now, kind=FireKind.TRIGGERED) for slot in slots]
    return await store.fire_insert_many(schedule.uid, writes)


async def fires_of(store: SchedulerStore, uid: uuid.UUID) -> list[Fire]:
    return [fire for _, fire in await store.fire_list(uid, 0, ALL)]


async def outbox(store: SchedulerStore, ns: str) -> list[OutboxSubmit]:
    """The undelivered, unheld outbox rows of namespace `ns` (submits and cancels), in
    seq order: the test's part of a claim that spans namespaces."""
    rows = await store.submit_outbox_claim(ALL)
    return [r for r in rows if r.parent.startswith(f"namespaces/{ns}/")]


async def deliver(store: SchedulerStore, ns: str, now: datetime, *writes: FireWrite) -> None:
    """Mark the submits of `writes` delivered, each answered with an order named after it."""
    ids = {w.fire.id for w in writes}
    rows = [r for r in await outbox(store, ns) if r.fire_id in ids]
    assert len(rows) == len(ids)
    marks = [Delivery(r.seq, r.fire_id, r.action, order_of(r)) for r in rows]
    await store.submit_outbox_mark(marks, now)


def order_of(row: OutboxSubmit) -> str:
    """The work order `deliver` names for an outbox row."""
    return f"{row.parent}/workOrders/{row.fire_id}"
