"""SQLAlchemy implementation of RunStore for PostgreSQL and SQLite."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from conveyor_core.clock import opt_to_micros, to_micros
from conveyor_executor.domain.failure import ClassifiedError
from conveyor_executor.domain.model import (
    JobUsage,
    Output,
    OutputRef,
    Progress,
    Run,
    RunRef,
    RunState,
    StepRecord,
    Usage,
)
from conveyor_executor.errors import OutputNotFound, RunNotFound
from conveyor_executor.runners.context import Step
from conveyor_executor.store import attempt_statements as one_statement
from conveyor_executor.store.attempt_batches import finish_attempts, start_attempts
from conveyor_executor.store.base import (
    AttemptFinish,
    AttemptStart,
    BatchPartlyWritten,
    JournalDraft,
    RunListParams,
    StepDraft,
)
from conveyor_executor.store.rows import (
    attempt_from_row,
    error_to_json,
    output_from_row,
    run_from_row,
    step_from_row,
)
from conveyor_executor.store.tables import attempts, journal_outbox, outputs, runs, steps

rc = runs.c
ac = attempts.c
sc = steps.c
oc = outputs.c


def _run_key(ref: RunRef) -> Any:
    return and_(rc.namespace == ref.namespace, rc.run_id == ref.run_id)


def _json_safe(value: Any) -> Any:
    """Step attributes as plain JSON (datetimes and other objects become strings)."""
    return json.loads(json.dumps(value, default=str))


def journal_rows(drafts: Sequence[JournalDraft]) -> list[dict[str, Any]]:
    return [
        {
            "type": d.type,
            "namespace": d.namespace,
            "at": to_micros(d.at),
            "subjects": dict(d.subjects),
            "correlation_id": d.correlation_id,
            "trace_id": d.trace_id,
            "attributes": dict(d.attributes),
            "delivered_at": None,
        }
        for d in drafts
    ]


#: Executed with many rows: RETURNING makes SQLAlchemy send them as one multi-row INSERT
#: ("insertmanyvalues") instead of one execution per row.
JOURNAL_INSERT = insert(journal_outbox).returning(journal_outbox.c.seq)


class SqlRunStore:
    """RunStore over one async engine (PostgreSQL or SQLite)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._postgres = engine.dialect.name == "postgresql"
        # A run and its attempts are read in two statements. Under PostgreSQL's READ
        # COMMITTED each statement sees the commits made before it began, so a run
        # ending between them read as RUNNING with its attempt already FAILED. One
        # snapshot for both (REPEATABLE READ); SQLite's read transaction is one already.
        self._snapshot = (
            engine.execution_options(isolation_level="REPEATABLE READ")
            if self._postgres
            else engine
        )
        # Attempt starts and ends as one self-contained statement (attempt_statements.py).
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")

    # -- runs and attempts ------------------------------------------------------------

    async def run_start_attempt(self, params: AttemptStart) -> Run:
        now_us = to_micros(params.now)
        ref, origin = params.ref, params.origin
        async with self._engine.begin() as conn:
            existing = (
                await conn.execute(select(rc.run_id).where(_run_key(ref)).with_for_update())
            ).first()
            if existing is None:
                await conn.execute(
                    insert(runs).values(
                        namespace=ref.namespace,
                        run_id=ref.run_id,
                        kind=origin.kind.value,
                        state=RunState.RUNNING.value,
                        work_order=origin.work_order,
                        job=origin.job,
                        job_version=origin.job_version,
                        schedule=origin.schedule,
                        slot_time=opt_to_micros(origin.slot_time),
                        fire_id=origin.fire_id,
                        correlation_id=origin.correlation_id,
                        trace_id=origin.trace_id,
                        created_at=now_us,
                        updated_at=now_us,
                        started_at=now_us,
                        attempt=params.attempt,
                        work_found=False,
                        summary="",
                        input_tokens=0,
                        output_tokens=0,
                        cost_usd=0.0,
                    )
                )
            else:
                await conn.execute(
                    update(runs)
                    .where(_run_key(ref))
                    .values(
                        state=RunState.RUNNING.value,
                        attempt=params.attempt,
                        updated_at=now_us,
                        ended_at=None,
                        started_at=func.coalesce(rc.started_at, now_us),
                    )
                )
            # A re-delivered attempt number (the queue never repeats one) replaces the old row.
            await conn.execute(
                attempts.delete().where(
                    ac.namespace == ref.namespace,
                    ac.run_id == ref.run_id,
                    ac.number == params.attempt,
                )
            )
            await conn.execute(
                insert(attempts).values(
                    namespace=ref.namespace,
                    run_id=ref.run_id,
                    number=params.attempt,
                    executor=params.executor,
                    state=RunState.RUNNING.value,
                    started_at=now_us,
                    summary="",
                )
            )
            await self._journal(conn, params.journal)
            return await self._run(conn, ref)

    async def run_finish_attempt(self, params: AttemptFinish) -> Run:
        end, ref = params.end, params.ref
        at_us = to_micros(end.at)
        error = error_to_json(end.error)
        terminal = end.run_state.terminal
        async with self._engine.begin() as conn:
            await conn.execute(
                update(attempts)
                .where(
                    ac.namespace == ref.namespace,
                    ac.run_id == ref.run_id,
                    ac.number == params.attempt,
                )
                .values(
                    state=end.attempt_state.value, ended_at=at_us, error=error, summary=end.summary
                )
            )
            # Only the run's latest attempt moves the run: a late report of an older
            # attempt (its lease was lost) must not overwrite its successor's state.
            await conn.execute(
                update(runs)
                .where(_run_key(ref), rc.attempt == params.attempt)
                .values(
                    state=end.run_state.value,
                    updated_at=at_us,
                    ended_at=at_us if terminal else None,
                    error=error,
                    work_found=end.work_found,
                    summary=end.summary,
                    # Usage adds up over attempts: every attempt's AI calls were paid for.
                    input_tokens=rc.input_tokens + end.usage.input_tokens,
                    output_tokens=rc.output_tokens + end.usage.output_tokens,
                    cost_usd=rc.cost_usd + end.usage.cost_usd,
                )
            )
            await self._journal(conn, params.journal)
            return await self._run(conn, ref)

    async def run_start_attempts(self, batch: Sequence[AttemptStart]) -> None:
        """`run_start_attempt` of many attempts in one transaction (without reading back)."""
        if not batch:
            return
        rest = await self._start_new_runs(batch) if self._postgres else list(batch)
        if not rest:
            return
        try:
            async with self._engine.begin() as conn:
                await start_attempts(conn, rest, self._postgres)
                await self._journal(conn, [d for p in rest for d in p.journal])
        except Exception as error:
            if len(rest) == len(batch):
                raise
            left = {id(p) for p in rest}
            written = frozenset(i for i, p in enumerate(batch) if id(p) not in left)
            raise BatchPartlyWritten(written, error) from error

    async def _start_new_runs(self, batch: Sequence[AttemptStart]) -> list[AttemptStart]:
        """Starts of runs new to the store, in one autocommit statement; returns the rest
        (known runs, and a run's second attempt in the batch) for the transaction."""
        first: dict[tuple[str, str], AttemptStart] = {}
        for p in batch:
            first.setdefault((p.ref.namespace, p.ref.run_id), p)
        values = one_statement.start_values(list(first.values()))
        async with self._autocommit.connect() as conn:
            result = await conn.execute(one_statement.START_POSTGRES, values)
            started = {(row.namespace, row.run_id) for row in result}
        done = {id(first[key]) for key in started}
        return [p for p in batch if id(p) not in done]

    async def run_finish_attempts(self, batch: Sequence[AttemptFinish]) -> None:
        """`run_finish_attempt` of many attempts in one transaction (without reading back)."""
        if not batch:
            return
        if self._postgres and one_statement.distinct_attempts(batch):
            values = one_statement.finish_values(batch)
            async with self._autocommit.connect() as conn:
                await conn.execute(one_statement.FINISH_POSTGRES, values)
            return
        async with self._engine.begin() as conn:
            await finish_attempts(conn, batch, self._postgres)
            await self._journal(conn, [d for p in batch for d in p.journal])

    async def run_abort_pending(
        self, ref: RunRef, error: ClassifiedError, at: datetime, journal: tuple[JournalDraft, ...]
    ) -> Run:
        at_us = to_micros(at)
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(runs)
                .where(_run_key(ref), rc.state == RunState.PENDING.value)
                .values(
                    state=RunState.ABORTED.value,
                    updated_at=at_us,
                    ended_at=at_us,
                    error=error_to_json(error),
                )
            )
            if result.rowcount:
                await self._journal(conn, journal)
            return await self._run(conn, ref)

    async def run_set_progress(self, ref: RunRef, progress: Progress) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                update(runs)
                .where(_run_key(ref))
                .values(
                    progress_percent=progress.percent,
                    progress_message=progress.message,
                    progress_at=to_micros(progress.at),
                )
            )

    async def run_get(self, ref: RunRef) -> Run:
        async with self._snapshot.connect() as conn:
            return await self._run(conn, ref)

    async def run_list(self, params: RunListParams) -> list[Run]:
        stmt = select(runs).where(rc.namespace == params.namespace)
        if params.job:
            stmt = stmt.where(rc.job == params.job)
        if params.schedule:
            stmt = stmt.where(rc.schedule == params.schedule)
        if params.work_order:
            stmt = stmt.where(rc.work_order == params.work_order)
        if params.states:
            stmt = stmt.where(rc.state.in_([s.value for s in params.states]))
        if params.after is not None:
            at, run_id = params.after.created_at_us, params.after.run_id
            stmt = stmt.where(
                or_(rc.created_at < at, and_(rc.created_at == at, rc.run_id < run_id))
            )
        stmt = stmt.order_by(rc.created_at.desc(), rc.run_id.desc()).limit(params.limit)
        async with self._snapshot.connect() as conn:
            rows = [r._mapping for r in await conn.execute(stmt)]
            by_run = await self._attempts_of(conn, params.namespace, [r["run_id"] for r in rows])
        return [run_from_row(r, by_run.get(r["run_id"], ())) for r in rows]

    async def job_usage(self, namespace: str, job: str) -> JobUsage:
        stmt = select(
            func.count(),
            func.coalesce(func.sum(rc.input_tokens), 0),
            func.coalesce(func.sum(rc.output_tokens), 0),
            func.coalesce(func.sum(rc.cost_usd), 0.0),
        ).where(rc.namespace == namespace, rc.job == f"namespaces/{namespace}/jobs/{job}")
        async with self._engine.connect() as conn:
            count, tokens_in, tokens_out, cost = (await conn.execute(stmt)).one()
        return JobUsage(
            f"namespaces/{namespace}/jobs/{job}",
            int(count),
            Usage(int(tokens_in), int(tokens_out), float(cost)),
        )

    # -- steps and outputs ---------------------------------------------------------------

    async def step_insert(
        self, ref: RunRef, attempt: int, step: Step, max_error_message: int
    ) -> StepRecord:
        [record] = await self.step_insert_many([StepDraft(ref, attempt, step, max_error_message)])
        return record

    async def step_insert_many(self, drafts: Sequence[StepDraft]) -> list[StepRecord]:
        rows = [_step_row(d) for d in drafts]
        stmt = insert(steps).returning(sc.seq, sort_by_parameter_order=True)
        async with self._engine.begin() as conn:
            seqs = (await conn.execute(stmt, rows)).scalars().all()
        return [step_from_row({**row, "seq": seq}) for row, seq in zip(rows, seqs, strict=True)]

    async def step_list(self, ref: RunRef, after_seq: int, limit: int) -> list[StepRecord]:
        stmt = (
            select(steps)
            .where(sc.namespace == ref.namespace, sc.run_id == ref.run_id, sc.seq > after_seq)
            .order_by(sc.seq)
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            await self._run_row(conn, ref)
            return [step_from_row(r._mapping) for r in await conn.execute(stmt)]

    async def output_insert(
        self, ref: RunRef, name: str, data: bytes, truncated: bool, now: datetime
    ) -> OutputRef:
        output = OutputRef(ref, uuid.uuid4().hex)
        async with self._engine.begin() as conn:
            await conn.execute(
                insert(outputs).values(
                    namespace=ref.namespace,
                    run_id=ref.run_id,
                    output_id=output.output_id,
                    name=name[:256],
                    data=data,
                    truncated=truncated,
                    size=len(data),
                    created_at=to_micros(now),
                )
            )
        return output

    async def output_get(self, ref: OutputRef) -> Output:
        stmt = select(outputs).where(
            oc.namespace == ref.run.namespace,
            oc.run_id == ref.run.run_id,
            oc.output_id == ref.output_id,
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(stmt)).first()
        if row is None:
            raise OutputNotFound(ref)
        return output_from_row(row._mapping)

    async def output_list(
        self, ref: RunRef, after: tuple[int, str] | None, limit: int
    ) -> list[Output]:
        columns = [c for c in outputs.c if c.name != "data"]
        stmt = select(*columns).where(oc.namespace == ref.namespace, oc.run_id == ref.run_id)
        if after is not None:
            at, output_id = after
            stmt = stmt.where(
                or_(oc.created_at > at, and_(oc.created_at == at, oc.output_id > output_id))
            )
        stmt = stmt.order_by(oc.created_at, oc.output_id).limit(limit)
        async with self._engine.connect() as conn:
            await self._run_row(conn, ref)
            found = await conn.execute(stmt)
            return [output_from_row({**r._mapping, "data": b""}) for r in found]

    async def journal_append(self, drafts: Sequence[JournalDraft]) -> None:
        async with self._engine.begin() as conn:
            await self._journal(conn, drafts)

    # -- helpers -----------------------------------------------------------------

    async def _journal(self, conn: AsyncConnection, drafts: Sequence[JournalDraft]) -> None:
        if drafts:
            await conn.execute(JOURNAL_INSERT, journal_rows(drafts))

    async def _run_row(self, conn: AsyncConnection, ref: RunRef) -> Any:
        row = (await conn.execute(select(runs).where(_run_key(ref)))).first()
        if row is None:
            raise RunNotFound(ref)
        return row._mapping

    async def _run(self, conn: AsyncConnection, ref: RunRef) -> Run:
        row = await self._run_row(conn, ref)
        by_run = await self._attempts_of(conn, ref.namespace, [ref.run_id])
        return run_from_row(row, by_run.get(ref.run_id, ()))

    async def _attempts_of(
        self, conn: AsyncConnection, namespace: str, run_ids: Sequence[str]
    ) -> dict[str, tuple[Any, ...]]:
        if not run_ids:
            return {}
        stmt = (
            select(attempts)
            .where(ac.namespace == namespace, ac.run_id.in_(list(run_ids)))
            .order_by(ac.run_id, ac.number)
        )
        out: dict[str, list[Any]] = {}
        for row in await conn.execute(stmt):
            out.setdefault(row.run_id, []).append(attempt_from_row(row._mapping))
        return {k: tuple(v) for k, v in out.items()}


def _step_row(d: StepDraft) -> dict[str, Any]:
    step = d.step
    return {
        "namespace": d.ref.namespace,
        "run_id": d.ref.run_id,
        "attempt": d.attempt,
        "kind": str(step.kind),
        "name": step.name[:256],
        "status": str(step.status),
        "started_at": to_micros(step.started_at),
        "finished_at": opt_to_micros(step.finished_at),
        "attributes": _json_safe(dict(step.attributes)),
        "error": error_to_json(step.error, d.max_error_message),
    }
