"""The statements of SqlWorkflowStore built once (SQLAlchemy, both dialects), and the run a
checkpoint stores, rebuilt from the caller's values (conveyor_executor.store.workflow_sql)."""

from __future__ import annotations

import dataclasses
from typing import Any

from sqlalchemy import bindparam, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from conveyor_core.clock import from_micros, to_micros
from conveyor_executor.domain.workflow import HandlerRun
from conveyor_executor.store.rows import error_from_json, error_to_json
from conveyor_executor.store.tables import handler_runs, mutations
from conveyor_executor.store.workflow_base import Advance

hc = handler_runs.c

_MUTATION_KEYS = ("namespace", "handler_run_id")


def _mutation_upsert(dialect: str) -> Any:
    """INSERT ... ON CONFLICT DO UPDATE of a mutation row, built once per dialect (its
    construction cost more than its execution): the row is bound at execute time."""
    stmt = (pg_insert if dialect == "postgresql" else sqlite_insert)(mutations)
    return stmt.on_conflict_do_update(
        index_elements=list(_MUTATION_KEYS),
        set_={c.name: stmt.excluded[c.name] for c in mutations.c if c.name not in _MUTATION_KEYS},
    )


MUTATION_UPSERTS = {name: _mutation_upsert(name) for name in ("postgresql", "sqlite")}

#: A new run's INSERT ... ON CONFLICT DO NOTHING RETURNING its id, per dialect: the row is
#: bound at execute time (built per call, the statement cost more than its execution).
RUN_INSERTS = {
    name: dialect(handler_runs).on_conflict_do_nothing().returning(hc.handler_run_id)
    for name, dialect in (("postgresql", pg_insert), ("sqlite", sqlite_insert))
}

#: The compare-and-set UPDATEs of handler_run_advance, one per shape (the columns set, the
#: phases expected, whether the revision is guarded, what is returned), built once: values
#: and keys are bound at execute time. The shapes are the driver's few checkpoints.
_ADVANCES: dict[tuple[tuple[str, ...], tuple[str, ...], bool, bool], Any] = {}


def advance_statement(
    columns: tuple[str, ...], expect: tuple[str, ...], guarded: bool, whole: bool
) -> Any:
    key = (columns, expect, guarded, whole)
    stmt = _ADVANCES.get(key)
    if stmt is None:
        where = [
            hc.namespace == bindparam("k_namespace"),
            hc.handler_run_id == bindparam("k_run"),
            hc.phase.in_(list(expect)),
        ]
        if guarded:
            where.append(hc.revision == bindparam("k_revision"))
        values: dict[str, Any] = {
            c: bindparam(f"v_{c}", type_=handler_runs.c[c].type) for c in columns
        }
        values["revision"] = hc.revision + 1
        stmt = update(handler_runs).where(*where).values(values)
        stmt = stmt.returning(*handler_runs.c) if whole else stmt.returning(hc.revision)
        _ADVANCES[key] = stmt
    return stmt


_TEXT_CHANGES = ("session_id", "prompt", "code_version")
_INT_CHANGES = ("state_version", "events_published")


def moved_run(base: HandlerRun, params: Advance, revision: int) -> HandlerRun:
    """`base` as handler_run_advance stored it: what reading the row back would give, from
    values the caller already holds (no re-parse of the held events' JSON per phase)."""
    fields: dict[str, Any] = dict(params.changes)
    for name in _TEXT_CHANGES:
        if name in fields:
            fields[name] = str(fields[name])
    for name in _INT_CHANGES:
        if name in fields:
            fields[name] = int(fields[name])
    if "error" in fields:  # stored as error_to_json keeps it (a message cut at its limit)
        fields["error"] = error_from_json(error_to_json(fields["error"]))
    now = from_micros(to_micros(params.now))
    fields.update(phase=params.phase, updated_at=now, revision=revision)
    if params.phase.terminal:
        fields["ended_at"] = now
    return dataclasses.replace(base, **fields)
