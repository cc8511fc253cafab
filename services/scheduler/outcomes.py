"""What became of fires, and what it changes: outcomes, adaptive backoff, the advisor, on-event.

The leader reads each submitted fire's order back from the queue
(GetWorkOrder), records the outcome (with the JobResult's work_found), and,
for jobs with an adaptive policy, moves the schedule's next slot and records
the decision with its reason. For jobs that enable the AI advisor (and when
CONVEYOR_ADVISOR_ENABLED), the advisor proposes the endpoints and delay of
the next run; its outcome (classifications, repairs, token usage) is
recorded as a decision whether or not its plan was used.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from conveyor_core.clock import Clock
from conveyor_scheduler.domain import adaptive, planning, timing
from conveyor_scheduler.domain.model import (
    AdaptiveMode,
    Fire,
    FireKind,
    FireOutcome,
    Job,
    Schedule,
    ScheduleKind,
)
from conveyor_scheduler.peers import EventsClient, OrderOutcome, QueueClient
from conveyor_scheduler.settings import SchedulerSettings
from conveyor_scheduler.store.base import FireFinish, NewDecision, SchedulerStore, ScheduleTiming

log = logging.getLogger(__name__)


class OutcomeTracker:
    def __init__(
        self,
        store: SchedulerStore,
        queue: QueueClient,
        settings: SchedulerSettings,
        clock: Clock,
        limits: planning.Limits,
        advisor: Any | None = None,
    ) -> None:
        self._store = store
        self._queue = queue
        self._settings = settings
        self._clock = clock
        self._limits = limits
        self._advisor = advisor  # conveyor_scheduler.advisor.Advisor when enabled

    async def track_once(self) -> int:
        """Read back one batch of active fires; return how many ended."""
        # Pacing of queue reads is wall-clock time, not the schedules' (injectable) clock.
        wall = datetime.now(UTC)
        recheck = timedelta(seconds=self._settings.outcome_recheck_seconds)
        fires = await self._store.fire_list_active(
            wall, self._settings.outcome_batch_size, wall - recheck
        )
        outcomes = await asyncio.gather(
            *(self._queue.outcome(f.work_order) for f in fires), return_exceptions=True
        )
        running, ended = [], 0
        for fire, outcome in zip(fires, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                log.warning(
                    "fire %s: order %s not read back: %s", fire.id, fire.work_order, outcome
                )
            elif outcome.outcome is FireOutcome.RUNNING:
                running.append(fire.id)
            elif outcome.outcome.finished:
                await self.finish(fire, outcome)
                ended += 1
        await self._store.fire_set_running(running, self._clock.now())
        return ended

    async def finish(self, fire: Fire, outcome: OrderOutcome) -> None:
        timing_change, decision = None, None
        if fire.kind is FireKind.SCHEDULED:
            schedule = await self._store.schedule_get_by_uid(fire.schedule_uid)
            if schedule is not None:
                job = await self._store.job_get(fire.schedule.job)
                timing_change, decision = await self._adapt(schedule, job, fire, outcome)
        await self._store.fire_finish(
            FireFinish(
                fire.id,
                outcome.outcome,
                self._clock.now(),
                outcome.work_found,
                outcome.error_type,
                outcome.reason,
                timing_change,
                decision,
            )
        )

    async def _adapt(
        self, schedule: Schedule, job: Job, fire: Fire, outcome: OrderOutcome
    ) -> tuple[ScheduleTiming | None, NewDecision | None]:
        config = job.definition.adaptive
        if config.advisor_enabled and self._advisor is not None:
            advised = await self._advise(schedule, job, fire, outcome)
            if advised[0] is not None:
                return advised
            fallback = self._backoff(schedule, job, fire, outcome)
            decision = advised[1]
            assert decision is not None
            if fallback[0] is not None and fallback[1] is not None:
                details = dict(decision.details)
                return fallback[0], NewDecision(
                    schedule.uid,
                    fire.id,
                    "advisor",
                    fallback[1].next_fire_at,
                    fallback[1].backoff_level,
                    f"advisor fell back ({details.get('fallback_reason')}): {fallback[1].reason}",
                    details,
                )
            return None, decision
        return self._backoff(schedule, job, fire, outcome)

    def _backoff(
        self, schedule: Schedule, job: Job, fire: Fire, outcome: OrderOutcome
    ) -> tuple[ScheduleTiming | None, NewDecision | None]:
        config, spec = job.definition.adaptive, schedule.spec
        if config.mode is not AdaptiveMode.BACKOFF or spec.kind is not ScheduleKind.INTERVAL:
            return None, None
        assert spec.every is not None
        step = adaptive.backoff_step(
            schedule.backoff_level,
            outcome.outcome,
            outcome.work_found,
            base=spec.every,
            multiplier=config.multiplier or self._settings.backoff_multiplier,
            max_interval=planning.max_interval(spec.every, job, self._limits),
            max_level=self._settings.max_backoff_level,
        )
        slot = fire.slot_at + step.interval
        if step.level == 0:  # back on the grid of the schedule as written
            slot = timing.next_slot_after(spec, fire.slot_at) or slot
        due = timing.fire_time(schedule.uid, slot, schedule.policy.jitter)
        decision = NewDecision(schedule.uid, fire.id, "backoff", due, step.level, step.reason)
        return ScheduleTiming(slot, due, backoff_level=step.level), decision

    async def _advise(
        self, schedule: Schedule, job: Job, fire: Fire, outcome: OrderOutcome
    ) -> tuple[ScheduleTiming | None, NewDecision | None]:
        from conveyor_scheduler.advisor import AdvisorRequest, EndpointInfo, RunSummary

        history = await self._store.fire_list_recent(
            schedule.uid, self._settings.advisor_history_size
        )
        runs = [f for f in reversed(history) if f.outcome.finished or f.id == fire.id]
        summaries = tuple(
            RunSummary(
                slot_time=f.slot_at,
                outcome=(outcome.outcome if f.id == fire.id else f.outcome).value,
                work_found=outcome.work_found if f.id == fire.id else f.work_found,
                duration_seconds=_duration(f),
                error_type=(outcome.error_type if f.id == fire.id else f.error_type) or None,
                endpoints_called=f.endpoints,
            )
            for f in runs
        )
        base = schedule.spec.every or timedelta(hours=1)
        now = self._clock.now()
        request = AdvisorRequest(
            job=job.ref.name,
            endpoints=tuple(EndpointInfo(e.name, e.depends_on) for e in job.definition.endpoints),
            history=summaries,
            min_next_run=timedelta(seconds=self._settings.min_interval_seconds),
            max_next_run=base * self._settings.advisor_max_next_run_factor,
            allow_partial=True,
            now=now,
        )
        advice = await self._advisor.advise(request)  # type: ignore[union-attr]
        details: dict[str, object] = {
            "classifications": list(advice.classifications),
            "repair_attempts": advice.repair_attempts,
            "salvaged": advice.salvaged,
            "input_tokens": advice.input_tokens,
            "output_tokens": advice.output_tokens,
            "fallback_reason": advice.fallback_reason,
        }
        if advice.plan is None:
            decision = NewDecision(
                schedule.uid,
                fire.id,
                "advisor",
                schedule.next_fire_at,
                schedule.backoff_level,
                f"advisor fell back: {advice.fallback_reason}",
                details,
            )
            return None, decision
        plan = advice.plan
        slot = now + plan.next_run_in
        details["endpoints"] = list(plan.endpoints)
        decision = NewDecision(
            schedule.uid,
            fire.id,
            "advisor",
            slot,
            schedule.backoff_level,
            plan.reason or "advisor plan",
            details,
        )
        return ScheduleTiming(slot, slot, next_endpoints=plan.endpoints), decision

    async def poll_events_once(self, events: EventsClient) -> int:
        """Arm on-event schedules whose topic has pending events; return how many were armed."""
        armed = 0
        for schedule in await self._store.schedule_list_on_event(limit=10_000):
            if schedule.next_fire_at is not None:
                continue
            try:
                pending = await events.pending(schedule.spec.topic)
            except Exception:
                log.warning(
                    "schedule %s: pending count of %s not read",
                    schedule.ref.name,
                    schedule.spec.topic,
                    exc_info=True,
                )
                continue
            if pending <= 0 or await self._store.fire_has_active(schedule.uid):
                continue
            now = self._clock.now()
            slot = now + schedule.spec.debounce
            if await self._store.schedule_set_timing(
                schedule.uid, ScheduleTiming(slot, slot, pending_since=now), now, only_if_idle=True
            ):
                armed += 1
        return armed


def _duration(fire: Fire) -> float | None:
    if fire.submitted_at is None or fire.finished_at is None:
        return None
    return (fire.finished_at - fire.submitted_at).total_seconds()
