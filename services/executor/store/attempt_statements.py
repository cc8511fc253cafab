"""Attempt starts and ends on PostgreSQL as one autocommit statement per batch.

A group-committed start was BEGIN, the runs' INSERT, the attempts' INSERT, the
outbox INSERT and COMMIT: five round trips through SQLAlchemy, each about as
much client CPU as the statement itself. At low rates a batch is one attempt,
so those round trips are most of a no-op task's start (and, being on the path
from submit to the task function, of its latency). A data-modifying CTE does
all of it in one statement, which PostgreSQL runs atomically in autocommit: the
run, the attempt and the journal outbox rows commit together or not at all, as
in the transaction (`synchronous_commit` as configured: one WAL flush).

* `START_POSTGRES` inserts the batch's runs (`ON CONFLICT DO NOTHING`: the
  primary key finds the runs that exist), and the attempts and journal rows of
  the runs it inserted. It returns those runs; the caller writes the others (a
  later attempt of a known run: rare) through the transactional path, so each
  attempt's records still commit together.
* `FINISH_POSTGRES` ends the attempts and moves their runs. Each row is found
  as the transactional path finds it (docs in attempt_batches.py: a seek in the
  primary key's order, then its ctid, then the key rechecked on the tuple), so
  no plan walks a namespace whatever the statistics. Only the run's latest
  attempt moves the run; usage adds up. The journal rows are inserted with it.
  Used for batches whose (run, attempt) keys are distinct (an UPDATE touches a
  row once per statement); other batches take the transactional path.

Rows travel as arrays (`unnest ... WITH ORDINALITY`); the journal rows name
their attempt by its 1-based index in the batch.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import TextClause, text

from conveyor_core.clock import opt_to_micros, to_micros
from conveyor_executor.domain.model import RunState
from conveyor_executor.store.base import AttemptFinish, AttemptStart, JournalDraft
from conveyor_executor.store.rows import error_to_json

_JOURNAL_VALUES = """
    SELECT * FROM unnest(
        CAST(:j_of AS bigint[]), CAST(:j_types AS text[]), CAST(:j_namespaces AS text[]),
        CAST(:j_at AS bigint[]), CAST(:j_subjects AS json[]),
        CAST(:j_correlation_ids AS text[]), CAST(:j_trace_ids AS text[]),
        CAST(:j_attributes AS json[])
    ) WITH ORDINALITY AS j(of, type, namespace, at, subjects, correlation_id, trace_id,
                           attributes, n)
"""
_JOURNAL_INSERT = """
    INSERT INTO executor_journal_outbox
        (type, namespace, at, subjects, correlation_id, trace_id, attributes, delivered_at)
    SELECT j.type, j.namespace, j.at, j.subjects, j.correlation_id, j.trace_id, j.attributes,
           NULL
"""

START_POSTGRES: TextClause = text(f"""
    WITH v AS (
        SELECT * FROM unnest(
            CAST(:namespaces AS text[]), CAST(:run_ids AS text[]), CAST(:kinds AS text[]),
            CAST(:work_orders AS text[]), CAST(:jobs AS text[]),
            CAST(:job_versions AS bigint[]), CAST(:schedules AS text[]),
            CAST(:slot_times AS bigint[]), CAST(:fire_ids AS text[]),
            CAST(:correlation_ids AS text[]), CAST(:trace_ids AS text[]),
            CAST(:nows AS bigint[]), CAST(:attempts AS integer[]),
            CAST(:executors AS text[])
        ) WITH ORDINALITY AS v(namespace, run_id, kind, work_order, job, job_version,
                               schedule, slot_time, fire_id, correlation_id, trace_id, now,
                               attempt, executor, ord)
    ),
    fresh AS (
        INSERT INTO executor_runs
            (namespace, run_id, kind, state, work_order, job, job_version, schedule,
             slot_time, fire_id, correlation_id, trace_id, created_at, updated_at,
             started_at, attempt, work_found, summary, input_tokens, output_tokens, cost_usd)
        SELECT namespace, run_id, kind, :running, work_order, job, job_version, schedule,
               slot_time, fire_id, correlation_id, trace_id, now, now, now, attempt, false,
               '', 0, 0, 0.0
        FROM v ORDER BY namespace, run_id
        ON CONFLICT (namespace, run_id) DO NOTHING
        RETURNING namespace, run_id
    ),
    started AS MATERIALIZED (
        SELECT v.* FROM v JOIN fresh USING (namespace, run_id)
    ),
    tried AS (
        INSERT INTO executor_attempts
            (namespace, run_id, number, executor, state, started_at, summary)
        SELECT namespace, run_id, attempt, executor, :running, now, '' FROM started
    ),
    journaled AS (
        {_JOURNAL_INSERT}
        FROM ({_JOURNAL_VALUES}) AS j JOIN started ON started.ord = j.of
        ORDER BY j.n
    )
    SELECT namespace, run_id FROM started
""")

_SEEK = """(
    SELECT x.ctid FROM {table} AS x
    WHERE ({key}) >= ({values})
    ORDER BY {key}
    LIMIT 1
)"""

FINISH_POSTGRES: TextClause = text(f"""
    WITH v AS (
        SELECT * FROM unnest(
            CAST(:namespaces AS text[]), CAST(:run_ids AS text[]), CAST(:attempts AS integer[]),
            CAST(:attempt_states AS text[]), CAST(:ats AS bigint[]),
            CAST(:errors AS json[]), CAST(:summaries AS text[]),
            CAST(:run_states AS text[]), CAST(:ended_ats AS bigint[]),
            CAST(:work_founds AS boolean[]), CAST(:input_tokens AS bigint[]),
            CAST(:output_tokens AS bigint[]), CAST(:costs AS double precision[])
        ) WITH ORDINALITY AS v(namespace, run_id, attempt, attempt_state, at, error, summary,
                               run_state, ended_at, work_found, input_tokens, output_tokens,
                               cost_usd, ord)
    ),
    found AS MATERIALIZED (
        SELECT v.*,
            {
    _SEEK.format(
        table="executor_attempts",
        key="x.namespace, x.run_id, x.number",
        values="v.namespace, v.run_id, v.attempt",
    )
} AS attempt_tid,
            {
    _SEEK.format(table="executor_runs", key="x.namespace, x.run_id", values="v.namespace, v.run_id")
} AS run_tid
        FROM v
    ),
    ended AS (
        UPDATE executor_attempts AS t
        SET state = f.attempt_state, ended_at = f.at, error = f.error, summary = f.summary
        FROM found AS f
        WHERE t.ctid = f.attempt_tid
          AND t.namespace = f.namespace AND t.run_id = f.run_id AND t.number = f.attempt
    ),
    moved AS (
        UPDATE executor_runs AS t
        SET state = f.run_state, updated_at = f.at, ended_at = f.ended_at, error = f.error,
            work_found = f.work_found, summary = f.summary,
            input_tokens = t.input_tokens + f.input_tokens,
            output_tokens = t.output_tokens + f.output_tokens,
            cost_usd = t.cost_usd + f.cost_usd
        FROM found AS f
        WHERE t.ctid = f.run_tid
          AND t.namespace = f.namespace AND t.run_id = f.run_id AND t.attempt = f.attempt
    ),
    journaled AS (
        {_JOURNAL_INSERT}
        FROM ({_JOURNAL_VALUES}) AS j
        ORDER BY j.n
    )
    SELECT count(*) FROM v
""")


def _journal_values(items: Sequence[tuple[int, Sequence[JournalDraft]]]) -> dict[str, Any]:
    """The journal arrays: each draft with the 1-based index of its attempt in the batch."""
    drafts = [(i, d) for i, journal in items for d in journal]
    return {
        "j_of": [i for i, _ in drafts],
        "j_types": [d.type for _, d in drafts],
        "j_namespaces": [d.namespace for _, d in drafts],
        "j_at": [to_micros(d.at) for _, d in drafts],
        "j_subjects": [json.dumps(dict(d.subjects)) for _, d in drafts],
        "j_correlation_ids": [d.correlation_id for _, d in drafts],
        "j_trace_ids": [d.trace_id for _, d in drafts],
        "j_attributes": [json.dumps(dict(d.attributes)) for _, d in drafts],
    }


def start_values(batch: Sequence[AttemptStart]) -> dict[str, Any]:
    """`START_POSTGRES`'s parameters; `batch` holds one attempt per run."""
    origins = [p.origin for p in batch]
    return {
        "running": RunState.RUNNING.value,
        "namespaces": [p.ref.namespace for p in batch],
        "run_ids": [p.ref.run_id for p in batch],
        "kinds": [o.kind.value for o in origins],
        "work_orders": [o.work_order for o in origins],
        "jobs": [o.job for o in origins],
        "job_versions": [o.job_version for o in origins],
        "schedules": [o.schedule for o in origins],
        "slot_times": [opt_to_micros(o.slot_time) for o in origins],
        "fire_ids": [o.fire_id for o in origins],
        "correlation_ids": [o.correlation_id for o in origins],
        "trace_ids": [o.trace_id for o in origins],
        "nows": [to_micros(p.now) for p in batch],
        "attempts": [p.attempt for p in batch],
        "executors": [p.executor for p in batch],
        **_journal_values([(i, p.journal) for i, p in enumerate(batch, 1)]),
    }


def finish_values(batch: Sequence[AttemptFinish]) -> dict[str, Any]:
    """`FINISH_POSTGRES`'s parameters; `batch`'s (run, attempt) keys are distinct."""
    ends = [p.end for p in batch]
    errors = [error_to_json(e.error) for e in ends]
    ats = [to_micros(e.at) for e in ends]
    return {
        "namespaces": [p.ref.namespace for p in batch],
        "run_ids": [p.ref.run_id for p in batch],
        "attempts": [p.attempt for p in batch],
        "attempt_states": [e.attempt_state.value for e in ends],
        "ats": ats,
        "errors": [None if e is None else json.dumps(e) for e in errors],
        "summaries": [e.summary for e in ends],
        "run_states": [e.run_state.value for e in ends],
        "ended_ats": [
            at if e.run_state.terminal else None for e, at in zip(ends, ats, strict=True)
        ],
        "work_founds": [e.work_found for e in ends],
        "input_tokens": [e.usage.input_tokens for e in ends],
        "output_tokens": [e.usage.output_tokens for e in ends],
        "costs": [float(e.usage.cost_usd) for e in ends],
        **_journal_values([(i, p.journal) for i, p in enumerate(batch, 1)]),
    }


def distinct_attempts(batch: Sequence[AttemptFinish]) -> bool:
    """Each (run, attempt) once: what `FINISH_POSTGRES` needs."""
    return len({(p.ref.namespace, p.ref.run_id, p.attempt) for p in batch}) == len(batch)
