"""SQLAlchemy implementation of WorkflowStore for PostgreSQL and SQLite.

JSON documents (events held, prepared data, results, what `next` returned) are
stored as text written by `json.dumps`, so PostgreSQL never sees a NaN or NUL
it would refuse in a JSON column; the SDK refuses non-JSON values before.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import RowMapping, and_, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from conveyor_core.clock import from_micros, opt_from_micros, opt_to_micros, to_micros
from conveyor_executor.domain.model import Usage
from conveyor_executor.domain.workflow import (
    Emit,
    HandlerDef,
    HandlerKind,
    HandlerRun,
    HeldEvent,
    Mutation,
    MutationState,
    Phase,
    Resolution,
    Session,
    SessionState,
    WorkflowRecord,
)
from conveyor_executor.errors import (
    HandlerRunNotFound,
    PhaseConflict,
    SessionNotFound,
    WorkflowNotFound,
)
from conveyor_executor.store.base import JournalDraft
from conveyor_executor.store.rows import error_from_json, error_to_json
from conveyor_executor.store.sql import JOURNAL_INSERT, journal_rows
from conveyor_executor.store.tables import (
    handler_runs,
    mutations,
    sessions,
    workflows,
)
from conveyor_executor.store.workflow_base import Advance, HandlerRunListParams, MutationListParams
from conveyor_executor.store.workflow_pg import PgCheckpoints
from conveyor_executor.store.workflow_statements import (
    MUTATION_UPSERTS,
    RUN_INSERTS,
    advance_statement,
    moved_run,
)

wc, sc, hc, mc = workflows.c, sessions.c, handler_runs.c, mutations.c


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def _load(text: str | None) -> Any:
    return None if text is None else json.loads(text)


# -- rows <-> records ---------------------------------------------------------------------


def _workflow_row(r: WorkflowRecord) -> dict[str, Any]:
    return {
        "namespace": r.namespace,
        "workflow": r.workflow,
        "handlers": _dump([{**dataclasses.asdict(h), "kind": h.kind.value} for h in r.handlers]),
        "code_version": r.code_version,
        "queue": r.queue,
        "iteration_budget": r.iteration_budget,
        "cost_budget_usd": r.cost_budget_usd,
        "paused": r.paused,
        "paused_by": r.paused_by,
        "pause_reason": r.pause_reason,
        "registered_at": to_micros(r.registered_at),
        "updated_at": to_micros(r.updated_at),
    }


def _workflow(row: RowMapping | Mapping[str, Any]) -> WorkflowRecord:
    handlers = tuple(
        HandlerDef(**{**h, "kind": HandlerKind(h["kind"])}) for h in json.loads(row["handlers"])
    )
    return WorkflowRecord(
        namespace=row["namespace"],
        workflow=row["workflow"],
        handlers=handlers,
        code_version=row["code_version"],
        queue=row["queue"],
        iteration_budget=row["iteration_budget"],
        cost_budget_usd=row["cost_budget_usd"],
        registered_at=from_micros(row["registered_at"]),
        updated_at=from_micros(row["updated_at"]),
        paused=row["paused"],
        paused_by=row["paused_by"],
        pause_reason=row["pause_reason"],
    )


def _session_row(s: Session) -> dict[str, Any]:
    return {
        "namespace": s.namespace,
        "session_id": s.session_id,
        "workflow": s.workflow,
        "state": s.state.value,
        "trigger": s.trigger,
        "code_version": s.code_version,
        "iterations": s.iterations,
        "handler_runs": s.handler_runs,
        "input_tokens": s.usage.input_tokens,
        "output_tokens": s.usage.output_tokens,
        "cost_usd": s.usage.cost_usd,
        "follow_up": s.follow_up,
        "summary": s.summary,
        "started_at": to_micros(s.started_at),
        "ended_at": opt_to_micros(s.ended_at),
    }


def _session(row: RowMapping | Mapping[str, Any]) -> Session:
    return Session(
        namespace=row["namespace"],
        session_id=row["session_id"],
        workflow=row["workflow"],
        state=SessionState(row["state"]),
        trigger=row["trigger"],
        code_version=row["code_version"],
        started_at=from_micros(row["started_at"]),
        iterations=row["iterations"],
        handler_runs=row["handler_runs"],
        usage=Usage(row["input_tokens"], row["output_tokens"], row["cost_usd"]),
        follow_up=row["follow_up"],
        summary=row["summary"],
        ended_at=opt_from_micros(row["ended_at"]),
    )


def _emit_json(emit: Emit | None) -> str | None:
    if emit is None:
        return None
    return _dump({"keep_state": emit.keep_state, "state": emit.state, "events": emit.events})


_RUN_COLUMNS: dict[str, Any] = {
    "phase": lambda v: v.value,
    "events": lambda v: _dump([_event_dict(e) for e in v]),
    "prepared": _dump,
    "mutation_result": lambda v: None if v is None else _dump(v),
    "emit": _emit_json,
    "error": error_to_json,
    "ended_at": opt_to_micros,
    "session_id": str,
    "state_version": int,
    "prompt": str,
    "events_published": int,
    "code_version": str,
}


def _event_dict(e: HeldEvent) -> dict[str, Any]:
    # Not dataclasses.asdict: it deep-copies each payload first (a fifth of an advance's
    # CPU with 100 events); json.dumps needs no copy.
    return {
        "topic": e.topic,
        "sequence": e.sequence,
        "message_id": e.message_id,
        "title": e.title,
        "payload": e.payload,
    }


def _run_values(changes: Mapping[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, value in changes.items():
        if key == "usage":
            values.update(
                input_tokens=value.input_tokens,
                output_tokens=value.output_tokens,
                cost_usd=value.cost_usd,
            )
        else:
            values[key] = _RUN_COLUMNS[key](value)
    return values


def _run_row(r: HandlerRun) -> dict[str, Any]:
    row: dict[str, Any] = {
        "namespace": r.namespace,
        "handler_run_id": r.handler_run_id,
        "workflow": r.workflow,
        "handler": r.handler,
        "kind": r.kind.value,
        "queue": r.queue,
        "topic": r.topic,
        "created_at": to_micros(r.created_at),
        "updated_at": to_micros(r.updated_at),
        "revision": r.revision,
    }
    row.update(
        _run_values({k: getattr(r, k) for k in (*_RUN_COLUMNS, "usage") if k not in ("ended_at",)})
    )
    row["ended_at"] = opt_to_micros(r.ended_at)
    return row


def _run(row: RowMapping | Mapping[str, Any]) -> HandlerRun:
    emit = _load(row["emit"])
    return HandlerRun(
        namespace=row["namespace"],
        handler_run_id=row["handler_run_id"],
        session_id=row["session_id"],
        workflow=row["workflow"],
        handler=row["handler"],
        kind=HandlerKind(row["kind"]),
        phase=Phase(row["phase"]),
        queue=row["queue"],
        code_version=row["code_version"],
        created_at=from_micros(row["created_at"]),
        updated_at=from_micros(row["updated_at"]),
        topic=row["topic"],
        events=tuple(HeldEvent(**e) for e in json.loads(row["events"])),
        prepared=_load(row["prepared"]),
        mutation_result=_load(row["mutation_result"]),
        emit=None
        if emit is None
        else Emit(emit["keep_state"], emit["state"], tuple(emit["events"])),
        state_version=row["state_version"],
        error=error_from_json(row["error"]),
        prompt=row["prompt"],
        usage=Usage(row["input_tokens"], row["output_tokens"], row["cost_usd"]),
        events_published=row["events_published"],
        ended_at=opt_from_micros(row["ended_at"]),
        revision=row["revision"],
    )


def _mutation_row(m: Mutation) -> dict[str, Any]:
    return {
        "namespace": m.namespace,
        "handler_run_id": m.handler_run_id,
        "workflow": m.workflow,
        "handler": m.handler,
        "state": m.state.value,
        "attempts": m.attempts,
        "result": _dump(m.result),
        "error": error_to_json(m.error),
        "reconciled": m.reconciled,
        "resolution": m.resolution.value if m.resolution else None,
        "resolved_by": m.resolved_by,
        "resolution_reason": m.resolution_reason,
        "resolved_at": opt_to_micros(m.resolved_at),
        "started_at": to_micros(m.started_at),
        "updated_at": to_micros(m.updated_at),
        "ended_at": opt_to_micros(m.ended_at),
    }


def _mutation(row: RowMapping | Mapping[str, Any]) -> Mutation:
    return Mutation(
        namespace=row["namespace"],
        handler_run_id=row["handler_run_id"],
        workflow=row["workflow"],
        handler=row["handler"],
        state=MutationState(row["state"]),
        attempts=row["attempts"],
        started_at=from_micros(row["started_at"]),
        updated_at=from_micros(row["updated_at"]),
        result=_load(row["result"]),
        error=error_from_json(row["error"]),
        reconciled=row["reconciled"],
        resolution=Resolution(row["resolution"]) if row["resolution"] else None,
        resolved_by=row["resolved_by"],
        resolution_reason=row["resolution_reason"],
        resolved_at=opt_from_micros(row["resolved_at"]),
        ended_at=opt_from_micros(row["ended_at"]),
    )


def _newest_first(created: Any, ident: Any, after: tuple[int, str] | None) -> Any:
    if after is None:
        return None
    at, key = after
    return or_(created < at, and_(created == at, ident < key))


class SqlWorkflowStore:
    """WorkflowStore over one async engine (PostgreSQL or SQLite)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        # PostgreSQL: a run's create and its checkpoints are one statement each.
        self._pg = PgCheckpoints(engine) if engine.dialect.name == "postgresql" else None

    async def _journal(self, conn: AsyncConnection, drafts: Sequence[JournalDraft]) -> None:
        if drafts:
            await conn.execute(JOURNAL_INSERT, journal_rows(drafts))

    # -- workflows ----------------------------------------------------------------------

    async def workflow_register(self, record: WorkflowRecord) -> WorkflowRecord:
        row = _workflow_row(record)
        key = and_(wc.namespace == record.namespace, wc.workflow == record.workflow)
        async with self._engine.begin() as conn:
            existing = (await conn.execute(select(workflows).where(key))).first()
            if existing is None:
                await conn.execute(insert(workflows).values(row))
            else:
                keep: tuple[str, ...] = ("namespace", "workflow", "paused", "paused_by")
                keep += ("pause_reason",)
                keep += ("registered_at",)
                changes = {k: v for k, v in row.items() if k not in keep}
                await conn.execute(update(workflows).where(key).values(changes))
            return _workflow((await conn.execute(select(workflows).where(key))).one()._mapping)

    async def workflow_get(self, namespace: str, workflow: str) -> WorkflowRecord:
        key = and_(wc.namespace == namespace, wc.workflow == workflow)
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(workflows).where(key))).first()
        if row is None:
            raise WorkflowNotFound(namespace, workflow)
        return _workflow(row._mapping)

    async def workflow_list(self, namespace: str) -> list[WorkflowRecord]:
        stmt = select(workflows).where(wc.namespace == namespace).order_by(wc.workflow)
        async with self._engine.connect() as conn:
            return [_workflow(r._mapping) for r in await conn.execute(stmt)]

    async def workflow_set_paused(
        self,
        namespace: str,
        workflow: str,
        paused: bool,
        by: str,
        reason: str,
        now: datetime,
        journal: tuple[JournalDraft, ...],
    ) -> WorkflowRecord:
        key = and_(wc.namespace == namespace, wc.workflow == workflow)
        values = {
            "paused": paused,
            "paused_by": by if paused else "",
            "pause_reason": reason if paused else "",
            "updated_at": to_micros(now),
        }
        async with self._engine.begin() as conn:
            done = await conn.execute(update(workflows).where(key).values(values))
            if not done.rowcount:
                raise WorkflowNotFound(namespace, workflow)
            await self._journal(conn, journal)
            return _workflow((await conn.execute(select(workflows).where(key))).one()._mapping)

    # -- sessions -----------------------------------------------------------------------

    async def session_start(self, session: Session, journal: tuple[JournalDraft, ...]) -> Session:
        key = and_(sc.namespace == session.namespace, sc.session_id == session.session_id)
        async with self._engine.begin() as conn:
            existing = (await conn.execute(select(sessions).where(key))).first()
            if existing is None:
                await conn.execute(insert(sessions).values(_session_row(session)))
            else:
                running = {"state": SessionState.RUNNING.value, "ended_at": None}
                await conn.execute(update(sessions).where(key).values(running))
            await self._journal(conn, journal)
            return _session((await conn.execute(select(sessions).where(key))).one()._mapping)

    async def session_finish(self, session: Session, journal: tuple[JournalDraft, ...]) -> Session:
        key = and_(sc.namespace == session.namespace, sc.session_id == session.session_id)
        row = _session_row(session)
        async with self._engine.begin() as conn:
            done = await conn.execute(update(sessions).where(key).values(row))
            if not done.rowcount:  # never started: nothing to end, nothing to journal
                raise SessionNotFound(session.namespace, session.session_id)
            await self._journal(conn, journal)
        return session

    async def session_get(self, namespace: str, session_id: str) -> Session:
        key = and_(sc.namespace == namespace, sc.session_id == session_id)
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(sessions).where(key))).first()
        if row is None:
            raise SessionNotFound(namespace, session_id)
        return _session(row._mapping)

    async def workflow_usage(self, namespace: str, workflow: str) -> Usage:
        stmt = select(
            func.coalesce(func.sum(sc.input_tokens), 0),
            func.coalesce(func.sum(sc.output_tokens), 0),
            func.coalesce(func.sum(sc.cost_usd), 0.0),
        ).where(sc.namespace == namespace, sc.workflow == workflow)
        async with self._engine.connect() as conn:
            row = (await conn.execute(stmt)).one()
        return Usage(int(row[0]), int(row[1]), float(row[2]))

    async def session_list(
        self, namespace: str, workflow: str, after: tuple[int, str] | None, limit: int
    ) -> list[Session]:
        stmt = select(sessions).where(sc.namespace == namespace, sc.workflow == workflow)
        cursor = _newest_first(sc.started_at, sc.session_id, after)
        if cursor is not None:
            stmt = stmt.where(cursor)
        stmt = stmt.order_by(sc.started_at.desc(), sc.session_id.desc()).limit(limit)
        async with self._engine.connect() as conn:
            return [_session(r._mapping) for r in await conn.execute(stmt)]

    # -- handler runs and the ledger -------------------------------------------------------

    async def handler_run_create(
        self, run: HandlerRun, journal: tuple[JournalDraft, ...]
    ) -> HandlerRun:
        """Idempotent per run id: a create repeated (a retried write whose answer was
        lost) returns the stored run and journals nothing again."""
        if self._pg is not None:
            if await self._pg.create(_run_row(run), journal):
                return run
            return await self.handler_run_get(run.namespace, run.handler_run_id)
        async with self._engine.begin() as conn:
            stmt = RUN_INSERTS[conn.dialect.name]
            inserted = (await conn.execute(stmt, _run_row(run))).first()
            if inserted is None:
                key = and_(hc.namespace == run.namespace, hc.handler_run_id == run.handler_run_id)
                return _run((await conn.execute(select(handler_runs).where(key))).one()._mapping)
            await self._journal(conn, journal)
        return run

    async def handler_run_advance(self, params: Advance) -> HandlerRun:
        values = _run_values({**params.changes, "phase": params.phase})
        values["updated_at"] = to_micros(params.now)
        if params.phase.terminal:
            values["ended_at"] = values["updated_at"]
        base = params.base
        if base is not None and (params.revision is None or base.revision != params.revision):
            base = None  # not the run at the revision guarded: read the moved row back
        if self._pg is not None and base is not None:
            mutation = None if params.mutation is None else _mutation_row(params.mutation)
            key = {
                "namespace": params.namespace,
                "handler_run_id": params.handler_run_id,
                "expect": [p.value for p in params.expect],
                "revision": params.revision,
            }
            revision = await self._pg.advance(key, values, mutation, params.journal)
            if revision is None:
                raise await self._not_moved(params)
            return moved_run(base, params, revision)
        stmt = advance_statement(
            tuple(sorted(values)),
            tuple(p.value for p in params.expect),
            params.revision is not None,
            whole=base is None,
        )
        bound = {f"v_{k}": v for k, v in values.items()}
        bound["k_namespace"], bound["k_run"] = params.namespace, params.handler_run_id
        bound["k_revision"] = params.revision
        async with self._engine.begin() as conn:
            # UPDATE ... RETURNING: the moved row (or, with `base`, its revision) in the
            # same statement.
            row = (await conn.execute(stmt, bound)).first()
            if row is None:  # not moved: missing, or in another phase or revision
                raise await self._not_moved(params, conn)
            if params.mutation is not None:
                await self._upsert_mutation(conn, params.mutation)
            await self._journal(conn, params.journal)
        return _run(row._mapping) if base is None else moved_run(base, params, row[0])

    async def _not_moved(
        self, params: Advance, conn: AsyncConnection | None = None
    ) -> HandlerRunNotFound | PhaseConflict:
        """Why a compare-and-set moved nothing: no such run, or it is in another phase or
        at another revision."""
        try:
            run = (
                await self.handler_run_get(params.namespace, params.handler_run_id)
                if conn is None
                else await self._run_in(conn, params.namespace, params.handler_run_id)
            )
        except HandlerRunNotFound as missing:
            return missing
        return PhaseConflict(run.name, run.phase.value, params.phase.value, run.revision)

    async def _run_in(
        self, conn: AsyncConnection, namespace: str, handler_run_id: str
    ) -> HandlerRun:
        key = and_(hc.namespace == namespace, hc.handler_run_id == handler_run_id)
        row = (await conn.execute(select(handler_runs).where(key))).first()
        if row is None:
            raise HandlerRunNotFound(namespace, handler_run_id)
        return _run(row._mapping)

    async def _upsert_mutation(self, conn: AsyncConnection, mutation: Mutation) -> None:
        """One INSERT ... ON CONFLICT DO UPDATE (both PostgreSQL and SQLite have it)."""
        await conn.execute(MUTATION_UPSERTS[conn.dialect.name], _mutation_row(mutation))

    async def handler_run_get(self, namespace: str, handler_run_id: str) -> HandlerRun:
        async with self._engine.connect() as conn:
            return await self._run_in(conn, namespace, handler_run_id)

    async def handler_run_list(self, params: HandlerRunListParams) -> list[HandlerRun]:
        stmt = select(handler_runs).where(hc.namespace == params.namespace)
        if params.workflow:
            stmt = stmt.where(hc.workflow == params.workflow)
        if params.phases:
            stmt = stmt.where(hc.phase.in_([p.value for p in params.phases]))
        if params.session_id:
            stmt = stmt.where(hc.session_id == params.session_id)
        cursor = _newest_first(hc.created_at, hc.handler_run_id, params.after)
        if cursor is not None:
            stmt = stmt.where(cursor)
        stmt = stmt.order_by(hc.created_at.desc(), hc.handler_run_id.desc()).limit(params.limit)
        async with self._engine.connect() as conn:
            return [_run(r._mapping) for r in await conn.execute(stmt)]

    async def mutation_get(self, namespace: str, handler_run_id: str) -> Mutation | None:
        key = and_(mc.namespace == namespace, mc.handler_run_id == handler_run_id)
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(mutations).where(key))).first()
        return None if row is None else _mutation(row._mapping)

    async def mutation_list(self, params: MutationListParams) -> list[Mutation]:
        stmt = select(mutations).where(mc.namespace == params.namespace)
        if params.workflow:
            stmt = stmt.where(mc.workflow == params.workflow)
        if params.states:
            stmt = stmt.where(mc.state.in_([s.value for s in params.states]))
        cursor = _newest_first(mc.started_at, mc.handler_run_id, params.after)
        if cursor is not None:
            stmt = stmt.where(cursor)
        stmt = stmt.order_by(mc.started_at.desc(), mc.handler_run_id.desc()).limit(params.limit)
        async with self._engine.connect() as conn:
            return [_mutation(r._mapping) for r in await conn.execute(stmt)]
