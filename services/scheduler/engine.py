"""The scheduler engine: jobs and schedules, and the firing tick the leader runs.

The API calls the CRUD methods; `fire_due` is called by the leader's firing
loop (leader.py) with its fencing token. Outcomes, adaptive policies and
on-event arming are in outcomes.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from datetime import datetime, timedelta
from typing import Protocol

from opentelemetry import propagate, trace

from conveyor_core.clock import Clock
from conveyor_core.context import get_correlation_id, new_correlation_id
from conveyor_core.coordination import Coordination
from conveyor_core.errors import FieldViolation, InvalidArgument, Unavailable
from conveyor_core.metrics import meter
from conveyor_core.poison import record_poisoned
from conveyor_scheduler import invocation
from conveyor_scheduler.domain import planning, timing
from conveyor_scheduler.domain.model import (
    Fire,
    FireKind,
    FireOutcome,
    Job,
    JobDefinition,
    JobRef,
    JobRun,
    JobRunRequest,
    PolicyDecision,
    Schedule,
    ScheduleKind,
    SchedulePolicy,
    ScheduleRef,
    ScheduleSpec,
    SubmittedOrder,
)
from conveyor_scheduler.errors import NotAvailable
from conveyor_scheduler.settings import SchedulerSettings
from conveyor_scheduler.store.base import (
    DueSchedule,
    FirePlan,
    FireTickParams,
    FireWrite,
    JournalEntry,
    NewSchedule,
    SchedulerStore,
    ScheduleTiming,
    Submit,
)
from conveyor_scheduler.store.outbox import SUBMIT_CHANNEL

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)
_meter = meter(__name__)
FIRES = _meter.create_counter("conveyor.scheduler.fires", description="Slots fired.")
SLOTS_SKIPPED = _meter.create_counter(
    "conveyor.scheduler.slots_skipped",
    description="Slots not fired (reason: overlap, catch_up_fire_once, missed, ...), per schedule.",
)
FIRE_LAG = _meter.create_histogram(
    "conveyor.scheduler.fire_lag",
    unit="s",
    description="Queue accept time minus slot time.",
    # Seconds (the SDK's default buckets are for milliseconds).
    explicit_bucket_boundaries_advisory=(
        0.01,
        0.025,
        0.05,
        0.1,
        0.25,
        0.5,
        1,
        2.5,
        5,
        10,
        30,
        60,
        300,
        900,
        3600,
    ),
)
WAKE_CHANNEL = "scheduler:wake"
PREVIEW_HORIZON = timedelta(days=366 * 100)
TRIGGER_SLOT_TRIES = 100

JOB_RUN_JOURNAL_TYPE = "scheduler.job.run"

JOURNAL_TYPES = {
    FireOutcome.PENDING: "scheduler.schedule.fired",
    FireOutcome.BUFFERED: "scheduler.schedule.buffered",
    FireOutcome.SKIPPED: "scheduler.slot.skipped",
    FireOutcome.MISSED: "scheduler.slot.missed",
}


class OrderSubmitter(Protocol):
    """Submits a work order for a caller now (peers.QueueClient.submit_now)."""

    async def submit_now(self, parent: str, spec: bytes) -> SubmittedOrder: ...


class SchedulerEngine:
    #: Set once the queue's address is known (service.attach_peers); RunJob needs it.
    submitter: OrderSubmitter | None = None

    def __init__(
        self,
        store: SchedulerStore,
        coordination: Coordination,
        settings: SchedulerSettings,
        clock: Clock,
    ) -> None:
        self.store = store
        self.coordination = coordination
        self.settings = settings
        self.clock = clock
        s = settings
        self.limits = planning.Limits(
            s.max_catch_up_fires,
            s.max_recorded_missed_slots,
            s.backoff_multiplier,
            s.backoff_max_factor,
        )

    # -- jobs ------------------------------------------------------------------------

    async def create_job(self, ref: JobRef, definition: JobDefinition) -> Job:
        return await self.store.job_insert(ref, definition, self.clock.now())

    async def get_job(self, ref: JobRef, version: int = 0) -> Job:
        return await self.store.job_get(ref, version)

    async def list_jobs(self, namespace: str, after: str, limit: int) -> list[Job]:
        return await self.store.job_list(namespace, after, limit)

    async def update_job(self, ref: JobRef, definition: JobDefinition, expected: int) -> Job:
        return await self.store.job_update(ref, definition, expected, self.clock.now())

    async def delete_job(self, ref: JobRef) -> None:
        await self.store.job_delete(ref)

    # -- schedules -------------------------------------------------------------------

    async def create_schedule(
        self, ref: ScheduleRef, spec: ScheduleSpec, policy: SchedulePolicy, paused: bool = False
    ) -> Schedule:
        """A new schedule; `paused`: created paused, it fires once resumed (from then)."""
        new = self._new_schedule(uuid.uuid4(), ref, spec, policy)
        if paused:
            new = dataclasses.replace(new, paused=True)
        schedule = await self.store.schedule_insert(new, self.settings.max_schedules_per_job)
        await self._wake()
        return schedule

    async def update_schedule(
        self, ref: ScheduleRef, spec: ScheduleSpec, policy: SchedulePolicy
    ) -> Schedule:
        current = await self.store.schedule_get(ref)
        schedule = await self.store.schedule_update(
            self._new_schedule(current.uid, ref, spec, policy)
        )
        await self._wake()
        return schedule

    def _new_schedule(
        self, uid: uuid.UUID, ref: ScheduleRef, spec: ScheduleSpec, policy: SchedulePolicy
    ) -> NewSchedule:
        now = self.clock.now()
        if spec.kind is ScheduleKind.INTERVAL and spec.anchor is None:
            spec = ScheduleSpec(ScheduleKind.INTERVAL, every=spec.every, anchor=now)
        # An interval anchored in the future starts at its anchor.
        slot = timing.first_slot_from(spec, max(now, spec.anchor or now))
        if spec.kind is ScheduleKind.ONE_OFF and slot is None:
            raise InvalidArgument(
                FieldViolation("schedule.one_off.fire_time", "must not be in the past")
            )
        due = None if slot is None else timing.fire_time(uid, slot, policy.jitter)
        return NewSchedule(uid, ref, spec, policy, slot, due, now)

    async def get_schedule(self, ref: ScheduleRef) -> Schedule:
        return await self.store.schedule_get(ref)

    async def list_schedules(
        self, namespace: str, job_id: str | None, after: str, limit: int
    ) -> list[Schedule]:
        if job_id is not None:
            await self.store.job_get(JobRef(namespace, job_id))
        return await self.store.schedule_list(namespace, job_id, after, limit)

    async def delete_schedule(self, ref: ScheduleRef) -> None:
        await self.store.schedule_delete(ref)

    async def pause(self, ref: ScheduleRef) -> Schedule:
        schedule = await self.store.schedule_get(ref)
        keep = ScheduleTiming(schedule.next_slot_at, schedule.next_fire_at)
        return await self.store.schedule_set_paused(ref, True, keep, self.clock.now())

    async def resume(self, ref: ScheduleRef) -> Schedule:
        """Resume from now: slots that passed while paused are not fired (nor recorded)."""
        schedule = await self.store.schedule_get(ref)
        now = self.clock.now()
        slot = schedule.next_slot_at
        if slot is not None and slot < now and schedule.spec.kind is not ScheduleKind.ONE_OFF:
            slot = timing.first_slot_from(schedule.spec, now)
        due = None if slot is None else timing.fire_time(schedule.uid, slot, schedule.policy.jitter)
        resumed = await self.store.schedule_set_paused(ref, False, ScheduleTiming(slot, due), now)
        await self._wake()
        return resumed

    def preview(self, schedule: Schedule, start: datetime | None, count: int) -> list[datetime]:
        """The next `count` fire times (slot + jitter) from `start` (default now)."""
        if schedule.spec.kind is ScheduleKind.EVENT:
            return []
        start = start or self.clock.now()
        slots = timing.slots_in(schedule.spec, start, start + PREVIEW_HORIZON, count)
        jitter = schedule.policy.jitter
        return [timing.fire_time(schedule.uid, slot, jitter) for slot in slots]

    # -- manual fires ------------------------------------------------------------------

    async def trigger(self, ref: ScheduleRef) -> Fire:
        """Fire now, outside the schedule: the slot is the current instant.

        Should that instant already have a fire (a scheduled slot fired at the same
        microsecond), the next free microsecond is used, so a trigger always fires. A
        trigger committed first at a slot's very instant is that slot's fire (same
        idempotency key): the tick then finds the slot fired.
        """
        schedule = await self.store.schedule_get(ref)
        job = await self.store.job_get(ref.job)
        slot = self.clock.now()
        for _ in range(TRIGGER_SLOT_TRIES):
            write = self._fire_write(
                schedule, job, slot, FireKind.TRIGGERED, FireOutcome.PENDING, "triggered", 0
            )
            written = await self.store.fire_insert_many(schedule.uid, [write])
            if written:
                self._after_commit(written)
                return written[0].fire
            slot += timedelta(microseconds=1)
        raise NotAvailable(ref.name, "could not find a free slot to trigger; retry")

    async def run_job(self, request: JobRunRequest) -> JobRun:
        """Submit the job's JobInvocation now, outside its schedules; journal it once.

        With a request id the queue's idempotency key is derived from it, so a retried
        call answers with the first order (already_exists) and journals nothing again.
        """
        job = await self.store.job_get(request.job, request.version)
        known = [e.name for e in job.definition.endpoints]
        unknown = [e for e in request.endpoints if e not in known]
        if unknown:
            raise InvalidArgument(
                FieldViolation(
                    "endpoints",
                    f"{', '.join(unknown)}: not an endpoint of {job.ref.name} v{job.version} "
                    f"(it has: {', '.join(known) or 'none'})",
                )
            )
        if self.submitter is None:
            raise Unavailable("this scheduler has no queue to submit to (CONVEYOR_QUEUE_ADDRESS)")
        if request.request_id:
            key = f"run/{job.ref.namespace}/{job.ref.job_id}/{request.request_id}"
        else:
            key = f"run/{uuid.uuid4()}"
        parent, spec = invocation.run_spec(job, request.endpoints, request.input_payload, key)
        order = await self.submitter.submit_now(parent, spec)
        if not order.already_exists:
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            entry = JournalEntry(
                JOB_RUN_JOURNAL_TYPE,
                job.ref.namespace,
                {"job": job.ref.name, "work_order": order.id},
                {
                    "job_version": str(job.version),
                    "queue": parent,
                    "request_id": request.request_id,
                    "endpoints": ",".join(request.endpoints),
                },
                order.correlation_id or get_correlation_id() or "",
                carrier.get("traceparent", ""),
            )
            await self.store.journal_insert(entry, self.clock.now())
        return JobRun(order, job.version)

    async def backfill(
        self, ref: ScheduleRef, start: datetime, end: datetime
    ) -> tuple[list[Fire], int]:
        """Fire the slots of [start, end) that have no fire yet; (fired, already fired)."""
        schedule = await self.store.schedule_get(ref)
        if schedule.spec.kind in (ScheduleKind.EVENT, ScheduleKind.ONE_OFF):
            raise NotAvailable(ref.name, "only interval and cron schedules can be backfilled")
        job = await self.store.job_get(ref.job)
        slots = timing.slots_in(schedule.spec, start, end, self.settings.max_backfill_slots)
        now = self.clock.now()
        writes = [
            self._fire_write(
                schedule,
                job,
                slot,
                FireKind.BACKFILL,
                FireOutcome.PENDING,
                "backfill",
                0,
                fired_at=now,
            )
            for slot in slots
        ]
        written = await self.store.fire_insert_many(schedule.uid, writes) if writes else []
        self._after_commit(written)
        return [w.fire for w in written], len(writes) - len(written)

    async def list_fires(
        self, ref: ScheduleRef, before_seq: int, limit: int
    ) -> list[tuple[int, Fire]]:
        schedule = await self.store.schedule_get(ref)
        return await self.store.fire_list(schedule.uid, before_seq, limit)

    async def list_decisions(
        self, ref: ScheduleRef, before_seq: int, limit: int
    ) -> list[PolicyDecision]:
        schedule = await self.store.schedule_get(ref)
        return await self.store.decision_list(schedule.uid, before_seq, limit)

    # -- the firing tick (leader only) -------------------------------------------------

    async def fire_due(self, lease_name: str, fencing_token: int) -> int:
        """Fire one batch of due schedules; return how many schedules were due."""
        due_count = 0

        def plan(due: DueSchedule) -> FirePlan:
            nonlocal due_count
            due_count += 1
            return self._plan(due, fencing_token)

        params = FireTickParams(
            self.clock.now(),
            self.settings.fire_batch_size,
            lease_name,
            fencing_token,
            plan,
            poisoned=lambda item, error: record_poisoned(
                "scheduler", "fire_tick", f"schedule {item}", error, "paused"
            ),
        )
        written = await self.store.fire_tick(params)
        self._after_commit(written)
        return due_count

    def _plan(self, due: DueSchedule, token: int) -> FirePlan:
        schedule, job, now = due.schedule, due.job, self.clock.now()
        orders = [a.work_order for a in due.active if a.work_order]
        plan = planning.plan_due(
            schedule, job, orders, len(due.active), due.buffered, now, self.limits
        )
        writes = [
            self._fire_write(
                schedule, job, d.slot, FireKind.SCHEDULED, d.outcome, d.reason, token, fired_at=now
            )
            for d in plan.decisions
        ]
        if plan.missed_unrecorded:
            SLOTS_SKIPPED.add(
                plan.missed_unrecorded, {"schedule": schedule.ref.name, "reason": "missed"}
            )
            log.warning(
                "schedule %s: %d more slots missed (not recorded one by one)",
                schedule.ref.name,
                plan.missed_unrecorded,
            )
        fired = any(d.outcome is FireOutcome.PENDING for d in plan.decisions)
        endpoints = () if fired else schedule.next_endpoints
        cancels = [Submit(order, action="cancel") for order in plan.cancel_orders]
        return FirePlan(
            writes,
            ScheduleTiming(plan.next_slot, plan.next_fire, next_endpoints=endpoints),
            cancels,
        )

    def _fire_write(
        self,
        schedule: Schedule,
        job: Job,
        slot: datetime,
        kind: FireKind,
        outcome: FireOutcome,
        reason: str,
        token: int,
        fired_at: datetime | None = None,
    ) -> FireWrite:
        correlation_id = new_correlation_id()
        fires = outcome in (FireOutcome.PENDING, FireOutcome.BUFFERED)
        fire = Fire(
            id=uuid.uuid4(),
            schedule_uid=schedule.uid,
            schedule=schedule.ref,
            kind=kind,
            outcome=outcome,
            slot_at=slot,
            fired_at=fired_at or self.clock.now(),
            job_version=job.version,
            reason=reason,
            endpoints=schedule.next_endpoints if fires else (),
            correlation_id=correlation_id,
        )
        # Every fire is its own trace; the relay sends the traceparent with its order.
        traceparent = self._fire_span(schedule, fire)
        submit = None
        if fires:
            parent, spec = invocation.work_order_spec(job, fire, token)
            submit = Submit(parent, spec, "submit", correlation_id, traceparent, slot)
        journal = JournalEntry(
            JOURNAL_TYPES[outcome],
            schedule.ref.namespace,
            {"schedule": schedule.ref.name, "job": job.ref.name, "fire": str(fire.id)},
            {
                "slot_time": timing.rfc3339(slot),
                "kind": kind.value,
                "reason": reason,
                "job_version": str(job.version),
            },
            correlation_id,
            traceparent,
        )
        return FireWrite(fire, submit, journal, held=outcome is FireOutcome.BUFFERED)

    @staticmethod
    def _fire_span(schedule: Schedule, fire: Fire) -> str:
        """A span for the fire; its traceparent travels with the submit."""
        with tracer.start_as_current_span(
            "scheduler.fire",
            attributes={
                "conveyor.schedule": schedule.ref.name,
                "conveyor.fire_id": str(fire.id),
                "conveyor.slot_time": timing.rfc3339(fire.slot_at),
                "conveyor.outcome": fire.outcome.value,
                "conveyor.correlation_id": fire.correlation_id,
            },
        ):
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
        return carrier.get("traceparent", "")

    def _after_commit(self, written: list[FireWrite]) -> None:
        """Count what committed, and wake the relay."""
        for write in written:
            fire = write.fire
            attributes = {"schedule": fire.schedule.name}
            if fire.outcome in (FireOutcome.SKIPPED, FireOutcome.MISSED):
                reason = "missed" if fire.outcome is FireOutcome.MISSED else fire.reason
                SLOTS_SKIPPED.add(1, attributes | {"reason": reason})
                log.info(
                    "schedule %s: slot %s %s (%s)",
                    fire.schedule.name,
                    timing.rfc3339(fire.slot_at),
                    fire.outcome.value,
                    fire.reason,
                )
            elif fire.outcome is FireOutcome.PENDING:
                FIRES.add(1, attributes | {"kind": fire.kind.value})
        if any(w.submit is not None and not w.held for w in written):
            self._poke(SUBMIT_CHANNEL)

    def _poke(self, channel: str) -> None:
        asyncio.get_running_loop().create_task(self._notify(channel))

    async def _notify(self, channel: str) -> None:
        try:
            await self.coordination.notify(channel)
        except Exception:
            log.warning("wake-up on %s not sent", channel, exc_info=True)

    async def _wake(self) -> None:
        await self._notify(WAKE_CHANNEL)

    def record_lag(self, slot: datetime, submitted: datetime) -> None:
        FIRE_LAG.record(max(0.0, (submitted - slot) / timedelta(seconds=1)))
