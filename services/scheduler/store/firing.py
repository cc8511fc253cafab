"""The firing path: one transaction per batch of due schedules, plus fire history and the outbox.

`fire_tick` is the heart of "never twice, never silently missed":

1. due schedules are read (`FOR UPDATE SKIP LOCKED` on PostgreSQL);
2. fencing: the leader's token must be >= the highest token that ever fired
   (`scheduler_leader`, one row updated per firing transaction), so a deposed
   leader's late transaction aborts instead of committing;
3. the engine's pure plan decides fire / buffer / skip / miss per slot;
4. fire rows (unique per schedule and slot), queue submits (the outbox),
   journal records and each schedule's next slot are written together.

So a crash before commit loses nothing (the schedule is still due) and a
crash after commit duplicates nothing (the relay delivers the outbox row,
and the queue dedups by the idempotency key).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, bindparam, insert, or_, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from conveyor_core.clock import from_micros, opt_to_micros, to_micros
from conveyor_core.poison import describe, is_transient
from conveyor_scheduler.domain.model import Fire, FireOutcome, ScheduleRef
from conveyor_scheduler.store import rows
from conveyor_scheduler.store.base import (
    ActiveFire,
    Delivery,
    DueSchedule,
    FencingTokenStale,
    FireFinish,
    FireTickParams,
    FireWrite,
    NewDecision,
    OutboxSubmit,
    ScheduleTiming,
)
from conveyor_scheduler.store.tables import (
    fires,
    job_versions,
    jobs,
    journal_outbox,
    leader,
    policy_decisions,
    schedules,
    submit_outbox,
)

log = logging.getLogger(__name__)
f, s, o = fires.c, schedules.c, submit_outbox.c
#: Policy of the decision recorded when a schedule is paused because it cannot be fired.
QUARANTINED = "quarantined"
ACTIVE = [FireOutcome.PENDING.value, FireOutcome.SUBMITTED.value, FireOutcome.RUNNING.value]
WAITING = [*ACTIVE, FireOutcome.BUFFERED.value]

UPDATE_TIMING = (
    update(schedules)
    .where(s.uid == bindparam("b_uid"))
    .values(
        next_slot_at=bindparam("b_slot"),
        next_fire_at=bindparam("b_fire"),
        next_endpoints=bindparam("b_endpoints"),
        pending_since=None,
        updated_at=bindparam("b_now"),
    )
)

MARK_SUBMITTED = (
    update(fires)
    .where(f.id == bindparam("b_id"), f.outcome == FireOutcome.PENDING.value)
    .values(
        outcome=bindparam("b_outcome"),
        work_order=bindparam("b_order"),
        submitted_at=bindparam("b_now"),
        finished_at=bindparam("b_finished"),
        reason=bindparam("b_reason"),
        error_type=bindparam("b_error_type"),
    )
)


def timing_values(timing: ScheduleTiming) -> dict[str, Any]:
    values: dict[str, Any] = {
        "next_slot_at": opt_to_micros(timing.next_slot_at),
        "next_fire_at": opt_to_micros(timing.next_fire_at),
    }
    if timing.backoff_level is not None:
        values["backoff_level"] = timing.backoff_level
    if timing.next_endpoints is not None:
        values["next_endpoints"] = list(timing.next_endpoints)
    return values


def decision_row(decision: NewDecision, now_us: int) -> dict[str, Any]:
    return {
        "schedule_uid": decision.schedule_uid,
        "fire_id": decision.fire_id,
        "policy": decision.policy,
        "next_fire_at": opt_to_micros(decision.next_fire_at),
        "backoff_level": decision.backoff_level,
        "reason": decision.reason,
        "details": dict(decision.details),
        "created_at": now_us,
    }


class FiringQueries:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._postgres = engine.dialect.name == "postgresql"

    # -- firing ------------------------------------------------------------------------

    async def fire_tick(self, params: FireTickParams) -> list[FireWrite]:
        """Fire one batch of due schedules in one transaction.

        A schedule that cannot be fired (unreadable row, planning raised) is paused
        in that same transaction (`params.poisoned` is told). Should the batch's
        writes fail anyway, the due schedules are fired one transaction each, so
        the one whose writes fail is found, paused, and the others fire.
        """
        try:
            return await self._tick(params)
        except FencingTokenStale:
            raise
        except Exception as error:
            if is_transient(error):
                raise
            log.warning("firing batch failed (%s): firing schedule by schedule", describe(error))
        return await self._tick_each(params)

    async def _tick(self, params: FireTickParams, only: uuid.UUID | None = None) -> list[FireWrite]:
        now_us = to_micros(params.now)
        async with self._engine.begin() as conn:
            statement = select(schedules).where(s.paused.is_(False), s.next_fire_at <= now_us)
            if only is not None:
                statement = statement.where(s.uid == only)
            statement = statement.order_by(s.next_fire_at).limit(params.limit)
            if self._postgres:
                statement = statement.with_for_update(skip_locked=True)
            due_rows = [r._mapping for r in await conn.execute(statement)]
            if not due_rows:
                return []  # nothing to fire: no write, so an idle leader costs one read a tick
            await self._check_fencing(conn, params.lease_name, params.fencing_token)
            poisoned: dict[uuid.UUID, tuple[str, BaseException]] = {}
            readable = []
            for row in due_rows:
                try:
                    readable.append(rows.schedule_from_row(row))
                except Exception as error:
                    poisoned[row["uid"]] = (_row_name(row), error)
            due = await self._load_due(conn, readable) if readable else []
            plans = []
            for d in due:
                try:
                    plans.append((d.schedule.uid, params.plan(d)))
                except Exception as error:
                    poisoned[d.schedule.uid] = (d.schedule.ref.name, error)
            writes = [w for _, plan in plans for w in plan.writes]
            writes = await self._write_fires(conn, writes, params.fencing_token, now_us)
            cancels = [c for _, plan in plans for c in plan.cancels]
            await self._write_cancels(conn, cancels, params.fencing_token, now_us)
            if plans:
                await conn.execute(
                    UPDATE_TIMING,
                    [
                        {
                            "b_uid": uid,
                            "b_slot": opt_to_micros(plan.timing.next_slot_at),
                            "b_fire": opt_to_micros(plan.timing.next_fire_at),
                            "b_endpoints": list(plan.timing.next_endpoints or ()),
                            "b_now": now_us,
                        }
                        for uid, plan in plans
                    ],
                )
            if poisoned:
                await self._quarantine(conn, params, poisoned, now_us)
        return writes

    async def _tick_each(self, params: FireTickParams) -> list[FireWrite]:
        """The fallback of a failed batch: each due schedule in its own transaction."""
        statement = (
            select(s.uid, s.namespace, s.job_id, s.schedule_id)
            .where(s.paused.is_(False), s.next_fire_at <= to_micros(params.now))
            .order_by(s.next_fire_at)
            .limit(params.limit)
        )
        async with self._engine.connect() as conn:
            due = list(await conn.execute(statement))
        written: list[FireWrite] = []
        for row in due:
            try:
                written += await self._tick(params, only=row.uid)
            except FencingTokenStale:
                raise
            except Exception as error:
                if is_transient(error):
                    raise
                async with self._engine.begin() as conn:
                    poisoned: dict[uuid.UUID, tuple[str, BaseException]] = {
                        row.uid: (_row_name(row._mapping), error)
                    }
                    await self._quarantine(conn, params, poisoned, to_micros(params.now))
        return written

    async def _quarantine(
        self,
        conn: AsyncConnection,
        params: FireTickParams,
        poisoned: dict[uuid.UUID, tuple[str, BaseException]],
        now_us: int,
    ) -> None:
        """Pause poisoned schedules, each with a "quarantined" decision giving the cause."""
        for name, error in poisoned.values():
            params.poisoned(name, error)
        await conn.execute(
            update(schedules)
            .where(s.uid.in_(list(poisoned)))
            .values(paused=True, updated_at=now_us)
        )
        await conn.execute(
            insert(policy_decisions),
            [
                {
                    "schedule_uid": uid,
                    "fire_id": None,
                    "policy": QUARANTINED,
                    "next_fire_at": None,
                    "backoff_level": 0,
                    "reason": f"paused: the schedule could not be fired ({describe(error)})",
                    "details": {},
                    "created_at": now_us,
                }
                for uid, (_, error) in poisoned.items()
            ],
        )

    async def _check_fencing(self, conn: AsyncConnection, name: str, token: int) -> None:
        dialect = postgresql if self._postgres else sqlite
        statement = dialect.insert(leader).values(name=name, fencing_token=token)
        statement = statement.on_conflict_do_update(
            index_elements=[leader.c.name],
            set_={"fencing_token": statement.excluded.fencing_token},
            where=leader.c.fencing_token <= statement.excluded.fencing_token,
        ).returning(leader.c.fencing_token)
        if (await conn.execute(statement)).first() is None:
            raise FencingTokenStale(f"fencing token {token} is older than the latest leader's")

    async def _load_due(self, conn: AsyncConnection, due: list[Any]) -> list[DueSchedule]:
        v, j = job_versions.c, jobs.c
        keys = list({(d.ref.namespace, d.ref.job_id) for d in due})
        job_rows = await conn.execute(
            select(*v, j.created_at.label("jc"), j.updated_at.label("ju"))
            .join_from(
                job_versions,
                jobs,
                and_(j.namespace == v.namespace, j.job_id == v.job_id, v.version == j.version),
            )
            .where(tuple_(v.namespace, v.job_id).in_(keys))
        )
        found = {
            (r.namespace, r.job_id): rows.job_from_row(r._mapping, r.jc, r.ju) for r in job_rows
        }
        active: dict[uuid.UUID, list[ActiveFire]] = {}
        buffered: dict[uuid.UUID, int] = {}
        waiting = await conn.execute(
            select(f.id, f.schedule_uid, f.outcome, f.work_order).where(
                f.schedule_uid.in_([d.uid for d in due]), f.outcome.in_(WAITING)
            )
        )
        for row in waiting:
            if row.outcome == FireOutcome.BUFFERED.value:
                buffered[row.schedule_uid] = buffered.get(row.schedule_uid, 0) + 1
            else:
                fire = ActiveFire(row.id, FireOutcome(row.outcome), row.work_order)
                active.setdefault(row.schedule_uid, []).append(fire)
        return [
            DueSchedule(
                d,
                found[(d.ref.namespace, d.ref.job_id)],
                tuple(active.get(d.uid, ())),
                buffered.get(d.uid, 0),
            )
            for d in due
            if (d.ref.namespace, d.ref.job_id) in found
        ]

    async def _write_fires(
        self, conn: AsyncConnection, writes: Sequence[FireWrite], token: int, now_us: int
    ) -> list[FireWrite]:
        """Insert fire rows (dropping slots that already have one) with their outbox rows."""
        if not writes:
            return []
        # ON CONFLICT DO NOTHING: a slot fired concurrently (a trigger or backfill racing
        # the tick) keeps its first fire, atomically, and this one is left out.
        dialect = postgresql if self._postgres else sqlite
        statement = (
            dialect.insert(fires)
            .on_conflict_do_nothing(index_elements=[f.schedule_uid, f.slot_at])
            .returning(f.id, sort_by_parameter_order=True)
        )
        result = await conn.execute(
            statement, [rows.fire_to_row(w.fire, to_micros(w.fire.slot_at)) for w in writes]
        )
        inserted = {row.id for row in result}
        fresh = [w for w in writes if w.fire.id in inserted]
        if not fresh:
            return []
        submits = [
            {
                "fire_id": w.fire.id,
                "action": w.submit.action,
                "parent": w.submit.parent,
                "request": w.submit.request,
                "held": w.held,
                "correlation_id": w.submit.correlation_id,
                "traceparent": w.submit.traceparent,
                "fencing_token": token,
                "slot_at": to_micros(w.fire.slot_at),
                "created_at": now_us,
            }
            for w in fresh
            if w.submit is not None
        ]
        if submits:
            await conn.execute(insert(submit_outbox), submits)
        journal = [
            {
                "type": w.journal.type,
                "namespace": w.journal.namespace,
                "subjects": w.journal.subjects,
                "attributes": w.journal.attributes,
                "correlation_id": w.journal.correlation_id,
                "traceparent": w.journal.traceparent,
                "at": now_us,
            }
            for w in fresh
            if w.journal is not None
        ]
        if journal:
            await conn.execute(insert(journal_outbox), journal)
        return fresh

    async def _write_cancels(
        self, conn: AsyncConnection, cancels: Sequence[Any], token: int, now_us: int
    ) -> None:
        if cancels:
            await conn.execute(
                insert(submit_outbox),
                [
                    {
                        "fire_id": uuid.UUID(int=0),
                        "action": "cancel",
                        "parent": c.parent,
                        "request": b"",
                        "held": False,
                        "correlation_id": c.correlation_id,
                        "traceparent": c.traceparent,
                        "fencing_token": token,
                        "slot_at": now_us,
                        "created_at": now_us,
                    }
                    for c in cancels
                ],
            )

    async def fire_insert_many(
        self, schedule_uid: uuid.UUID, writes: Sequence[FireWrite]
    ) -> list[FireWrite]:
        """Manual fires (trigger, backfill): slots that already have a fire are left out."""
        async with self._engine.begin() as conn:
            now_us = to_micros(writes[0].fire.fired_at) if writes else 0
            return await self._write_fires(conn, writes, 0, now_us)

    # -- history -----------------------------------------------------------------------

    def _fires_of(self) -> Any:
        return select(fires, s.namespace, s.job_id, s.schedule_id).join_from(
            fires, schedules, s.uid == f.schedule_uid
        )

    @staticmethod
    def _fire(row: Any) -> Fire:
        m = row._mapping
        return rows.fire_from_row(m, ScheduleRef(m["namespace"], m["job_id"], m["schedule_id"]))

    async def fire_list(
        self, schedule_uid: uuid.UUID, before_seq: int, limit: int
    ) -> list[tuple[int, Fire]]:
        statement = self._fires_of().where(f.schedule_uid == schedule_uid)
        if before_seq:
            statement = statement.where(f.seq < before_seq)
        statement = statement.order_by(f.seq.desc()).limit(limit)
        async with self._engine.connect() as conn:
            return [(r.seq, self._fire(r)) for r in await conn.execute(statement)]

    async def fire_list_recent(self, schedule_uid: uuid.UUID, limit: int) -> list[Fire]:
        return [fire for _, fire in await self.fire_list(schedule_uid, 0, limit)]

    async def fire_list_active(self, now: Any, limit: int, recheck_after: Any) -> list[Fire]:
        """Submitted/running fires not checked since `recheck_after`, least recently checked
        first; marks them checked at `now`."""
        after_us = to_micros(recheck_after)
        statement = (
            self._fires_of()
            .where(
                f.outcome.in_([FireOutcome.SUBMITTED.value, FireOutcome.RUNNING.value]),
                or_(f.checked_at.is_(None), f.checked_at <= after_us),
            )
            .order_by(f.checked_at.asc().nulls_first())
            .limit(limit)
        )
        async with self._engine.begin() as conn:
            found = [self._fire(r) for r in await conn.execute(statement)]
            if found:
                await conn.execute(
                    update(fires)
                    .where(f.id.in_([x.id for x in found]))
                    .values(checked_at=to_micros(now))
                )
        return found

    async def fire_has_active(self, schedule_uid: uuid.UUID) -> bool:
        statement = select(f.id).where(f.schedule_uid == schedule_uid, f.outcome.in_(WAITING))
        async with self._engine.connect() as conn:
            return (await conn.execute(statement.limit(1))).first() is not None

    async def fire_set_running(self, fire_ids: Sequence[uuid.UUID], now: Any) -> None:
        if fire_ids:
            async with self._engine.begin() as conn:
                await conn.execute(
                    update(fires)
                    .where(f.id.in_(list(fire_ids)), f.outcome == FireOutcome.SUBMITTED.value)
                    .values(outcome=FireOutcome.RUNNING.value)
                )

    async def fire_finish(self, finish: FireFinish) -> None:
        """Record a fire's end; apply its schedule changes; release a buffered fire."""
        now_us = to_micros(finish.now)
        async with self._engine.begin() as conn:
            uid = await conn.scalar(
                update(fires)
                .where(f.id == finish.fire_id, f.outcome.in_(ACTIVE))
                .values(
                    outcome=finish.outcome.value,
                    work_found=finish.work_found,
                    error_type=finish.error_type[:128],
                    reason=finish.reason,
                    finished_at=now_us,
                )
                .returning(f.schedule_uid)
            )
            if uid is None:
                return  # already recorded
            if finish.timing is not None:
                await conn.execute(
                    update(schedules)
                    .where(s.uid == uid)
                    .values(updated_at=now_us, **timing_values(finish.timing))
                )
            if finish.decision is not None:
                await conn.execute(
                    insert(policy_decisions).values(decision_row(finish.decision, now_us))
                )
            await self._release_buffered(conn, uid)

    async def _release_buffered(self, conn: AsyncConnection, uid: uuid.UUID) -> None:
        still_active = await conn.scalar(
            select(f.id).where(f.schedule_uid == uid, f.outcome.in_(ACTIVE)).limit(1)
        )
        if still_active is not None:
            return
        next_id = await conn.scalar(
            select(f.id)
            .where(f.schedule_uid == uid, f.outcome == FireOutcome.BUFFERED.value)
            .order_by(f.slot_at)
            .limit(1)
        )
        if next_id is not None:
            await conn.execute(
                update(fires).where(f.id == next_id).values(outcome=FireOutcome.PENDING.value)
            )
            await conn.execute(update(submit_outbox).where(o.fire_id == next_id).values(held=False))

    # -- submit outbox -----------------------------------------------------------------

    async def submit_outbox_claim(self, limit: int) -> list[OutboxSubmit]:
        statement = (
            select(submit_outbox)
            .where(o.delivered_at.is_(None), o.held.is_(False))
            .order_by(o.seq)
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            return [
                OutboxSubmit(
                    r.seq,
                    r.fire_id,
                    r.action,
                    r.parent,
                    r.request,
                    r.correlation_id,
                    r.traceparent,
                    r.fencing_token,
                    from_micros(r.slot_at),
                )
                for r in await conn.execute(statement)
            ]

    async def submit_outbox_mark(self, deliveries: Sequence[Delivery], now: Any) -> None:
        if not deliveries:
            return
        now_us = to_micros(now)
        submits = [d for d in deliveries if d.action == "submit"]
        async with self._engine.begin() as conn:
            await conn.execute(
                update(submit_outbox)
                .where(o.seq.in_([d.seq for d in deliveries]))
                .values(delivered_at=now_us)
            )
            if submits:
                await conn.execute(MARK_SUBMITTED, [_submitted(d, now_us) for d in submits])


def _row_name(row: Any) -> str:
    return f"namespaces/{row['namespace']}/jobs/{row['job_id']}/schedules/{row['schedule_id']}"


def _submitted(delivery: Delivery, now_us: int) -> dict[str, Any]:
    failed = bool(delivery.error)
    return {
        "b_id": delivery.fire_id,
        "b_outcome": (FireOutcome.FAILED if failed else FireOutcome.SUBMITTED).value,
        "b_order": delivery.work_order,
        "b_now": now_us,
        "b_finished": now_us if failed else None,
        "b_reason": delivery.error,
        "b_error_type": delivery.error_type,
    }
