"""Group-committed attempt starts and ends: `SqlRunStore.run_start_attempts` and
`run_finish_attempts`, one transaction per batch.

Planner traps (PostgreSQL). Every index of `executor_runs` starts with
`namespace`. On a table without statistics (a young table, or autovacuum not
yet run) the planner estimates one row for `namespace = $1` in each of them,
so for `WHERE namespace = $1 AND run_id = $2` any of the five indexes looks as
good as the primary key, and a plan cached by the connection may read every
run of the namespace through, say, `ix_executor_runs_work_order` (0.5-50 ms per
run at a few thousand runs, growing with the table: docs/benchmarks.md,
"Round 3"). So on PostgreSQL:

* a start inserts its runs with `ON CONFLICT DO NOTHING RETURNING`: the
  primary key itself finds the runs that exist (no plan chooses anything);
  those, a later attempt of a known run (rare), are updated one by one;
* an end finds its run by a seek in the primary key's own order (`(namespace,
  run_id) >= ($1, $2) ORDER BY namespace, run_id LIMIT 1`: only that index
  yields the order, so no plan walks the namespace) and updates that tuple by
  its ctid (a TID scan: one tuple, cheaper than any index scan, whatever the
  estimates). The equality on the key and the attempt is checked on that
  tuple; a run row updated concurrently is followed to its latest version by
  PostgreSQL's READ COMMITTED update recheck, the key and attempt rechecked.

SQLite keeps the plain statements (its planner picks the primary key).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import JSON, Float, TextClause, bindparam, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from conveyor_core.clock import opt_to_micros, to_micros
from conveyor_executor.domain.model import RunState
from conveyor_executor.store.base import AttemptFinish, AttemptStart
from conveyor_executor.store.rows import error_to_json
from conveyor_executor.store.tables import attempts, runs

rc = runs.c
ac = attempts.c

#: The ctid of run (:k_namespace, :k_run_id), or of the next one in key order (see above).
_SEEK_RUN = """(
    SELECT x.ctid FROM executor_runs AS x
    WHERE (x.namespace, x.run_id) >= (:k_namespace, :k_run_id)
    ORDER BY x.namespace, x.run_id
    LIMIT 1
)"""

# Executed many: one parameter set per attempt.
FINISH_ATTEMPT = (
    update(attempts)
    .where(
        ac.namespace == bindparam("k_namespace"),
        ac.run_id == bindparam("k_run_id"),
        ac.number == bindparam("k_attempt"),
    )
    .values(
        state=bindparam("v_state"),
        ended_at=bindparam("v_at"),
        error=bindparam("v_error", type_=attempts.c.error.type),
        summary=bindparam("v_summary"),
    )
)
_FINISH_RUN_SET = """
    state = :v_state, updated_at = :v_at, ended_at = :v_ended_at, error = :v_error,
    work_found = :v_work_found, summary = :v_summary,
    input_tokens = input_tokens + :v_input_tokens,
    output_tokens = output_tokens + :v_output_tokens,
    cost_usd = cost_usd + :v_cost_usd
"""
_FINISH_RUN_WHERE = "namespace = :k_namespace AND run_id = :k_run_id AND attempt = :k_attempt"
_FINISH_RUN_TYPES = (
    bindparam("v_error", type_=JSON()),
    bindparam("v_cost_usd", type_=Float()),
)
# Only the run's latest attempt moves the run (see `run_finish_attempt`); usage adds up.
FINISH_RUN_POSTGRES: TextClause = text(
    f"UPDATE executor_runs SET {_FINISH_RUN_SET} WHERE ctid = {_SEEK_RUN} AND {_FINISH_RUN_WHERE}"
).bindparams(*_FINISH_RUN_TYPES)
FINISH_RUN_SQLITE: TextClause = text(
    f"UPDATE executor_runs SET {_FINISH_RUN_SET} WHERE {_FINISH_RUN_WHERE}"
).bindparams(*_FINISH_RUN_TYPES)

# A later attempt of a known run: the run is RUNNING again (rare; one by one).
_RESTART_RUN_SET = """
    state = :state, attempt = :attempt, updated_at = :now, ended_at = NULL,
    started_at = COALESCE(started_at, :now)
"""
RESTART_RUN_POSTGRES: TextClause = text(
    f"UPDATE executor_runs SET {_RESTART_RUN_SET} "
    f"WHERE ctid = {_SEEK_RUN} AND namespace = :k_namespace AND run_id = :k_run_id"
)
RESTART_RUN_SQLITE: TextClause = text(
    f"UPDATE executor_runs SET {_RESTART_RUN_SET} "
    "WHERE namespace = :k_namespace AND run_id = :k_run_id"
)


async def start_attempts(
    conn: AsyncConnection, batch: Sequence[AttemptStart], postgres: bool
) -> None:
    """Insert the batch's new runs and every attempt row (the journal is the caller's)."""
    first: dict[tuple[str, str], AttemptStart] = {}
    for p in batch:
        first.setdefault((p.ref.namespace, p.ref.run_id), p)
    dialect_insert = postgresql.insert if postgres else sqlite.insert
    statement = (
        dialect_insert(runs)
        .on_conflict_do_nothing(index_elements=[rc.namespace, rc.run_id])
        .returning(rc.namespace, rc.run_id)
    )
    # In key order, so that two transactions inserting the same runs wait in one order.
    rows = [new_run_row(first[key]) for key in sorted(first)]
    inserted = {(r.namespace, r.run_id) for r in await conn.execute(statement, rows)}
    fresh = {id(first[key]) for key in inserted}
    again = [p for p in batch if id(p) not in fresh]
    restart = RESTART_RUN_POSTGRES if postgres else RESTART_RUN_SQLITE
    for p in sorted(again, key=lambda p: (p.ref.namespace, p.ref.run_id)):
        now_us = to_micros(p.now)
        await conn.execute(
            restart,
            {
                "k_namespace": p.ref.namespace,
                "k_run_id": p.ref.run_id,
                "state": RunState.RUNNING.value,
                "attempt": p.attempt,
                "now": now_us,
            },
        )
        # A re-delivered attempt number (the queue never repeats one) replaces the old row.
        await conn.execute(
            attempts.delete().where(
                ac.namespace == p.ref.namespace,
                ac.run_id == p.ref.run_id,
                ac.number == p.attempt,
            )
        )
    # RETURNING: one multi-row INSERT ("insertmanyvalues"), not one execution per row.
    await conn.execute(attempts.insert().returning(ac.number), [new_attempt_row(p) for p in batch])


async def finish_attempts(
    conn: AsyncConnection, batch: Sequence[AttemptFinish], postgres: bool
) -> None:
    """End the batch's attempts and move their runs (the journal is the caller's)."""
    await conn.execute(FINISH_ATTEMPT, [_finish_attempt_params(p) for p in batch])
    finish_run = FINISH_RUN_POSTGRES if postgres else FINISH_RUN_SQLITE
    await conn.execute(finish_run, [_finish_run_params(p) for p in batch])


def new_run_row(p: AttemptStart) -> dict[str, Any]:
    now_us, origin = to_micros(p.now), p.origin
    return {
        "namespace": p.ref.namespace,
        "run_id": p.ref.run_id,
        "kind": origin.kind.value,
        "state": RunState.RUNNING.value,
        "work_order": origin.work_order,
        "job": origin.job,
        "job_version": origin.job_version,
        "schedule": origin.schedule,
        "slot_time": opt_to_micros(origin.slot_time),
        "fire_id": origin.fire_id,
        "correlation_id": origin.correlation_id,
        "trace_id": origin.trace_id,
        "created_at": now_us,
        "updated_at": now_us,
        "started_at": now_us,
        "attempt": p.attempt,
        "work_found": False,
        "summary": "",
        "input_tokens": 0,
        "output_tokens": 0,
        "cost_usd": 0.0,
    }


def new_attempt_row(p: AttemptStart) -> dict[str, Any]:
    return {
        "namespace": p.ref.namespace,
        "run_id": p.ref.run_id,
        "number": p.attempt,
        "executor": p.executor,
        "state": RunState.RUNNING.value,
        "started_at": to_micros(p.now),
        "summary": "",
    }


def _finish_attempt_params(p: AttemptFinish) -> dict[str, Any]:
    end = p.end
    return {
        "k_namespace": p.ref.namespace,
        "k_run_id": p.ref.run_id,
        "k_attempt": p.attempt,
        "v_state": end.attempt_state.value,
        "v_at": to_micros(end.at),
        "v_error": error_to_json(end.error),
        "v_summary": end.summary,
    }


def _finish_run_params(p: AttemptFinish) -> dict[str, Any]:
    end = p.end
    at_us = to_micros(end.at)
    return {
        "k_namespace": p.ref.namespace,
        "k_run_id": p.ref.run_id,
        "k_attempt": p.attempt,
        "v_state": end.run_state.value,
        "v_at": at_us,
        "v_ended_at": at_us if end.run_state.terminal else None,
        "v_error": error_to_json(end.error),
        "v_work_found": end.work_found,
        "v_summary": end.summary,
        "v_input_tokens": end.usage.input_tokens,
        "v_output_tokens": end.usage.output_tokens,
        "v_cost_usd": end.usage.cost_usd,
    }
