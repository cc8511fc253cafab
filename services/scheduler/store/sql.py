"""SQLAlchemy Core store of the scheduler: jobs, schedules, history reads (PostgreSQL or SQLite).

The firing path (one transaction per batch of due schedules) lives in
store/firing.py and the outbox in store/outbox.py; this class combines them.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from conveyor_core.clock import opt_to_micros, to_micros
from conveyor_scheduler.domain.model import (
    Job,
    JobDefinition,
    JobRef,
    PolicyDecision,
    Schedule,
    ScheduleKind,
    ScheduleRef,
)
from conveyor_scheduler.errors import (
    JobExists,
    JobNotFound,
    JobVersionConflict,
    ScheduleExists,
    ScheduleNotFound,
    TooManySchedules,
)
from conveyor_scheduler.store import rows
from conveyor_scheduler.store.base import JournalEntry, NewDecision, NewSchedule, ScheduleTiming
from conveyor_scheduler.store.firing import FiringQueries, decision_row, timing_values
from conveyor_scheduler.store.tables import (
    fires,
    job_versions,
    jobs,
    journal_outbox,
    policy_decisions,
    schedules,
)

j, v, s = jobs.c, job_versions.c, schedules.c


def _version_row(ref: JobRef, version: int, d: JobDefinition, now_us: int) -> dict[str, Any]:
    return {
        "namespace": ref.namespace,
        "job_id": ref.job_id,
        "version": version,
        "document": d.document,
        "queue": d.queue,
        "priority": d.priority,
        "adaptive": rows.adaptive_to_json(d.adaptive),
        "endpoints": [{"name": e.name, "depends_on": list(e.depends_on)} for e in d.endpoints],
        "created_at": now_us,
    }


JOB_SELECT = select(*v, j.created_at.label("job_created_at"), j.updated_at.label("job_updated_at"))


def _job(row: Any) -> Job:
    m = row._mapping
    return rows.job_from_row(m, m["job_created_at"], m["job_updated_at"])


class SqlSchedulerStore(FiringQueries):
    """SchedulerStore over SQLAlchemy Core."""

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine)

    # -- jobs ------------------------------------------------------------------------

    async def job_insert(self, ref: JobRef, definition: JobDefinition, now: datetime) -> Job:
        now_us = to_micros(now)
        try:
            async with self._engine.begin() as conn:
                await conn.execute(
                    insert(jobs).values(
                        namespace=ref.namespace,
                        job_id=ref.job_id,
                        version=1,
                        created_at=now_us,
                        updated_at=now_us,
                    )
                )
                await conn.execute(
                    insert(job_versions).values(_version_row(ref, 1, definition, now_us))
                )
        except IntegrityError as error:
            raise JobExists(ref.name) from error
        return Job(ref, 1, definition, now, now)

    async def job_get(self, ref: JobRef, version: int = 0) -> Job:
        async with self._engine.connect() as conn:
            return await self._job_get(conn, ref, version)

    async def _job_get(self, conn: AsyncConnection, ref: JobRef, version: int = 0) -> Job:
        wanted = version or j.version
        statement = JOB_SELECT.join_from(
            job_versions,
            jobs,
            and_(j.namespace == v.namespace, j.job_id == v.job_id, v.version == wanted),
        ).where(v.namespace == ref.namespace, v.job_id == ref.job_id)
        row = (await conn.execute(statement)).first()
        if row is None:
            raise JobNotFound(ref.name)
        return _job(row)

    async def job_list(self, namespace: str, after: str, limit: int) -> list[Job]:
        statement = (
            JOB_SELECT.join_from(
                job_versions,
                jobs,
                and_(j.namespace == v.namespace, j.job_id == v.job_id, v.version == j.version),
            )
            .where(v.namespace == namespace, v.job_id > after)
            .order_by(v.job_id)
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            return [_job(row) for row in await conn.execute(statement)]

    async def job_update(
        self, ref: JobRef, definition: JobDefinition, expected_version: int, now: datetime
    ) -> Job:
        now_us = to_micros(now)
        async with self._engine.begin() as conn:
            current = await self._job_get(conn, ref)
            if expected_version and expected_version != current.version:
                raise JobVersionConflict(ref.name, expected_version, current.version)
            version = current.version + 1
            result = await conn.execute(
                update(jobs)
                .where(
                    j.namespace == ref.namespace,
                    j.job_id == ref.job_id,
                    j.version == current.version,
                )
                .values(version=version, updated_at=now_us)
            )
            if result.rowcount != 1:  # a concurrent update won
                raise JobVersionConflict(ref.name, current.version, current.version + 1)
            await conn.execute(
                insert(job_versions).values(_version_row(ref, version, definition, now_us))
            )
        return Job(ref, version, definition, current.created_at, now)

    async def job_delete(self, ref: JobRef) -> None:
        async with self._engine.begin() as conn:
            result = await conn.execute(
                delete(jobs).where(j.namespace == ref.namespace, j.job_id == ref.job_id)
            )
            if result.rowcount == 0:
                raise JobNotFound(ref.name)
            await conn.execute(
                delete(job_versions).where(v.namespace == ref.namespace, v.job_id == ref.job_id)
            )
            uids = select(s.uid).where(s.namespace == ref.namespace, s.job_id == ref.job_id)
            await conn.execute(delete(fires).where(fires.c.schedule_uid.in_(uids)))
            await conn.execute(
                delete(policy_decisions).where(policy_decisions.c.schedule_uid.in_(uids))
            )
            await conn.execute(
                delete(schedules).where(s.namespace == ref.namespace, s.job_id == ref.job_id)
            )

    # -- schedules -------------------------------------------------------------------

    async def schedule_insert(self, new: NewSchedule, max_per_job: int) -> Schedule:
        ref, now_us = new.ref, to_micros(new.now)
        row = {
            "uid": new.uid,
            "namespace": ref.namespace,
            "job_id": ref.job_id,
            "schedule_id": ref.schedule_id,
            "kind": new.spec.kind.value,
            "spec": rows.spec_to_json(new.spec),
            "policy": rows.policy_to_json(new.policy),
            "paused": new.paused,
            "next_slot_at": opt_to_micros(new.next_slot_at),
            "next_fire_at": opt_to_micros(new.next_fire_at),
            "backoff_level": 0,
            "next_endpoints": [],
            "pending_since": None,
            "created_at": now_us,
            "updated_at": now_us,
        }
        try:
            async with self._engine.begin() as conn:
                await self._job_get(conn, ref.job)
                count = await conn.scalar(
                    select(func.count())
                    .select_from(schedules)
                    .where(s.namespace == ref.namespace, s.job_id == ref.job_id)
                )
                if (count or 0) >= max_per_job:
                    raise TooManySchedules(ref.job.name, max_per_job)
                await conn.execute(insert(schedules).values(row))
        except IntegrityError as error:
            raise ScheduleExists(ref.name) from error
        return rows.schedule_from_row(row)

    async def schedule_get(self, ref: ScheduleRef) -> Schedule:
        statement = select(schedules).where(
            s.namespace == ref.namespace, s.job_id == ref.job_id, s.schedule_id == ref.schedule_id
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(statement)).first()
        if row is None:
            raise ScheduleNotFound(ref.name)
        return rows.schedule_from_row(row._mapping)

    async def schedule_get_by_uid(self, uid: uuid.UUID) -> Schedule | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(schedules).where(s.uid == uid))).first()
        return None if row is None else rows.schedule_from_row(row._mapping)

    async def schedule_list(
        self, namespace: str, job_id: str | None, after: str, limit: int
    ) -> list[Schedule]:
        key = s.job_id + "/" + s.schedule_id
        statement = select(schedules).where(s.namespace == namespace, key > after)
        if job_id is not None:
            statement = statement.where(s.job_id == job_id)
        statement = statement.order_by(s.job_id, s.schedule_id).limit(limit)
        async with self._engine.connect() as conn:
            return [rows.schedule_from_row(r._mapping) for r in await conn.execute(statement)]

    async def schedule_list_on_event(self, limit: int) -> list[Schedule]:
        statement = (
            select(schedules)
            .where(s.kind == ScheduleKind.EVENT.value, s.paused.is_(False))
            .order_by(s.uid)
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            return [rows.schedule_from_row(r._mapping) for r in await conn.execute(statement)]

    async def schedule_update(self, new: NewSchedule) -> Schedule:
        """Replace spec, policy and next slot of the schedule `new.ref` (its uid is kept)."""
        ref = new.ref
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(schedules)
                .where(
                    s.namespace == ref.namespace,
                    s.job_id == ref.job_id,
                    s.schedule_id == ref.schedule_id,
                )
                .values(
                    kind=new.spec.kind.value,
                    spec=rows.spec_to_json(new.spec),
                    policy=rows.policy_to_json(new.policy),
                    next_slot_at=opt_to_micros(new.next_slot_at),
                    next_fire_at=opt_to_micros(new.next_fire_at),
                    pending_since=None,
                    updated_at=to_micros(new.now),
                )
                .returning(*schedules.c)
            )
            row = result.first()
        if row is None:
            raise ScheduleNotFound(ref.name)
        return rows.schedule_from_row(row._mapping)  # as written, not as the fire loop left it

    async def schedule_delete(self, ref: ScheduleRef) -> None:
        schedule = await self.schedule_get(ref)
        async with self._engine.begin() as conn:
            await conn.execute(delete(fires).where(fires.c.schedule_uid == schedule.uid))
            await conn.execute(
                delete(policy_decisions).where(policy_decisions.c.schedule_uid == schedule.uid)
            )
            await conn.execute(delete(schedules).where(s.uid == schedule.uid))

    async def schedule_set_paused(
        self, ref: ScheduleRef, paused: bool, timing: ScheduleTiming, now: datetime
    ) -> Schedule:
        schedule = await self.schedule_get(ref)
        # The row as this statement wrote it: a read after the commit could already see
        # the fire loop's next write (a resumed schedule due now fires at once).
        statement = (
            update(schedules)
            .where(s.uid == schedule.uid)
            .values(paused=paused, updated_at=to_micros(now), **timing_values(timing))
            .returning(*schedules.c)
        )
        async with self._engine.begin() as conn:
            row = (await conn.execute(statement)).first()
        if row is None:  # deleted between the read and the update
            raise ScheduleNotFound(ref.name)
        return rows.schedule_from_row(row._mapping)

    async def schedule_set_timing(
        self, uid: uuid.UUID, timing: ScheduleTiming, now: datetime, *, only_if_idle: bool = False
    ) -> bool:
        statement = update(schedules).where(s.uid == uid)
        if only_if_idle:  # on-event arming: only when nothing is due already
            statement = statement.where(s.next_fire_at.is_(None))
        values = timing_values(timing) | {"updated_at": to_micros(now)}
        if timing.pending_since is not None or only_if_idle:
            values["pending_since"] = opt_to_micros(timing.pending_since)
        async with self._engine.begin() as conn:
            result = await conn.execute(statement.values(values))
        return result.rowcount == 1

    # -- journal ---------------------------------------------------------------------

    async def journal_insert(self, entry: JournalEntry, now: datetime) -> None:
        """A journal record outside a fire (RunJob); the journal relay delivers it."""
        async with self._engine.begin() as conn:
            await conn.execute(
                insert(journal_outbox).values(
                    type=entry.type,
                    namespace=entry.namespace,
                    subjects=entry.subjects,
                    attributes=entry.attributes,
                    correlation_id=entry.correlation_id,
                    traceparent=entry.traceparent,
                    at=to_micros(now),
                )
            )

    # -- decisions -------------------------------------------------------------------

    async def decision_insert(self, decision: NewDecision, now: datetime) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                insert(policy_decisions).values(decision_row(decision, to_micros(now)))
            )

    async def decision_list(
        self, schedule_uid: uuid.UUID, before_seq: int, limit: int
    ) -> list[PolicyDecision]:
        schedule = await self.schedule_get_by_uid(schedule_uid)
        if schedule is None:
            return []
        d = policy_decisions.c
        statement = select(policy_decisions).where(d.schedule_uid == schedule_uid)
        if before_seq:
            statement = statement.where(d.seq < before_seq)
        statement = statement.order_by(d.seq.desc()).limit(limit)
        async with self._engine.connect() as conn:
            return [
                rows.decision_from_row(r._mapping, schedule.ref)
                for r in await conn.execute(statement)
            ]
