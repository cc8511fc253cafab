"""Hot-path SQL of the queue, written out so it is read as SQL, not guessed from ORM calls.

PostgreSQL dequeues with `FOR UPDATE SKIP LOCKED`, so concurrent leasers
never wait on each other's rows and never take the same row. SQLite has a
single writer, so the same statements run without row locks.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from sqlalchemy import TextClause, TextualSelect, text

from conveyor_queue.store.tables import work_orders

# Columns set when an order is leased; :now, :lease_us, :token, :worker bound.
# lease_expires_at is the earliest of the lease, the heartbeat timeout and the
# start-to-close timeout, so one index finds every kind of expiry.
_LEASE_SET = """
    state = 'LEASED',
    attempt = w.attempt + 1,
    lease_token = :token,
    leased_by = :worker,
    leased_at = CAST(:now AS BIGINT),
    heartbeat_at = NULL,
    progress_percent = NULL,
    progress_message = NULL,
    lease_duration_us = CAST(:lease_us AS BIGINT),
    lease_expires_at = {least}(
        CAST(:now AS BIGINT) + CAST(:lease_us AS BIGINT),
        CASE WHEN w.heartbeat_timeout_us > 0 THEN CAST(:now AS BIGINT) + w.heartbeat_timeout_us
             ELSE CAST(:far AS BIGINT) END,
        CASE WHEN w.start_to_close_us > 0 THEN CAST(:now AS BIGINT) + w.start_to_close_us
             ELSE CAST(:far AS BIGINT) END),
    updated_at = CAST(:now AS BIGINT)
"""

# The history row of every order a statement changed, written by the same
# statement (PostgreSQL data-modifying CTE): one round trip instead of two.
_HISTORY = """
    history AS (
        INSERT INTO queue_work_order_events
            (work_order_id, namespace, queue, from_state, to_state, at, attempt, reason, actor,
             correlation_id, traceparent)
        SELECT id, namespace, queue, {from_state}, state, updated_at, attempt, {reason}, {actor},
               correlation_id, traceparent
        FROM {source})
"""

_ELIGIBLE = """
    namespace = :ns AND queue = {queue} AND state = 'QUEUED' AND available_at <= :now
    AND (deadline_at IS NULL OR deadline_at > :now)
"""


# Submit in one statement: new orders arrive as parallel arrays (one constant,
# prepared statement whatever the batch size), taken idempotency keys are
# skipped, and each inserted order gets its "submitted" history row.
SUBMIT_POSTGRES_SQL = """
    WITH inserted AS (
        INSERT INTO queue_work_orders (
            id, namespace, queue, state, priority, payload, content_type, idempotency_key,
            concurrency_key, labels, not_before, available_at, deadline_at, start_to_close_us,
            heartbeat_timeout_us, retry_policy, max_attempts, attempt, leased_by,
            lease_duration_us, cancel_requested, correlation_id, traceparent, redrive_count,
            created_at, updated_at)
        SELECT v.id, v.namespace, v.queue, 'QUEUED', v.priority, v.payload, v.content_type,
               v.idempotency_key, v.concurrency_key, v.labels, v.not_before, v.available_at,
               v.deadline_at, v.start_to_close_us, v.heartbeat_timeout_us, v.retry_policy,
               v.max_attempts, 0, '', 0, false, v.correlation_id, v.traceparent, 0,
               CAST(:now AS BIGINT), CAST(:now AS BIGINT)
        FROM unnest(
            CAST(:id AS uuid[]), CAST(:namespace AS text[]), CAST(:queue AS text[]),
            CAST(:priority AS integer[]), CAST(:payload AS bytea[]),
            CAST(:content_type AS text[]), CAST(:idempotency_key AS text[]),
            CAST(:concurrency_key AS text[]), CAST(:labels AS json[]),
            CAST(:not_before AS bigint[]), CAST(:available_at AS bigint[]),
            CAST(:deadline_at AS bigint[]), CAST(:start_to_close_us AS bigint[]),
            CAST(:heartbeat_timeout_us AS bigint[]), CAST(:retry_policy AS json[]),
            CAST(:max_attempts AS integer[]), CAST(:correlation_id AS text[]),
            CAST(:traceparent AS text[])
        ) AS v(id, namespace, queue, priority, payload, content_type, idempotency_key,
               concurrency_key, labels, not_before, available_at, deadline_at,
               start_to_close_us, heartbeat_timeout_us, retry_policy, max_attempts,
               correlation_id, traceparent)
        ON CONFLICT (namespace, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
        RETURNING *),
    {history}
    SELECT * FROM inserted
"""
SUBMIT_ARRAY_COLUMNS = (
    "id",
    "namespace",
    "queue",
    "priority",
    "payload",
    "content_type",
    "idempotency_key",
    "concurrency_key",
    "labels",
    "not_before",
    "available_at",
    "deadline_at",
    "start_to_close_us",
    "heartbeat_timeout_us",
    "retry_policy",
    "max_attempts",
    "correlation_id",
    "traceparent",
)


def submit_params(rows: list[dict[str, Any]], now_us: int) -> dict[str, Any]:
    """Bind parameters of SUBMIT_POSTGRES: one array per column (JSON as text)."""
    params: dict[str, Any] = {"now": now_us}
    for column in SUBMIT_ARRAY_COLUMNS:
        values = [row[column] for row in rows]
        if column in ("labels", "retry_policy"):
            values = [json.dumps(v) for v in values]
        params[column] = values
    return params


#: A statement text, with its result columns declared when it returns orders.
Statement = TextClause | TextualSelect


def _typed(sql: str) -> Statement:
    return text(sql).columns(*work_orders.columns)


@functools.lru_cache(maxsize=256)  # built once per shape, not per call
def lease_fifo_postgres(queue_count: int) -> Statement:
    """Lease the first :limit eligible orders of one or more plain queues."""
    candidates = ""
    if queue_count == 1:
        picked = f"""
            SELECT seq FROM queue_work_orders
            WHERE {_ELIGIBLE.format(queue=":q0")}
            ORDER BY priority DESC, seq
            LIMIT :limit
            FOR UPDATE SKIP LOCKED"""
    else:
        # One index scan per queue (each stops after :limit rows), merged by priority.
        # Each scan is its own CTE: PostgreSQL refuses FOR UPDATE inside UNION branches.
        candidates = "".join(
            f"""c{i} AS (SELECT seq, priority FROM queue_work_orders
                 WHERE {_ELIGIBLE.format(queue=f":q{i}")}
                 ORDER BY priority DESC, seq LIMIT :limit FOR UPDATE SKIP LOCKED),"""
            for i in range(queue_count)
        )
        union = " UNION ALL ".join(f"SELECT seq, priority FROM c{i}" for i in range(queue_count))
        picked = f"SELECT seq FROM ({union}) AS c ORDER BY priority DESC, seq LIMIT :limit"
    return _typed(f"""
        WITH {candidates} picked AS ({picked}),
        leased AS (
            UPDATE queue_work_orders AS w SET {_LEASE_SET.format(least="LEAST")}
            FROM picked WHERE w.seq = picked.seq
            RETURNING w.*),
        {
        _HISTORY.format(
            source="leased", from_state="'QUEUED'", reason="'leased'", actor="CAST(:worker AS TEXT)"
        )
    }
        SELECT * FROM leased""")


@functools.lru_cache(maxsize=256)  # built once per shape, not per call
def lease_fifo_sqlite(queue_count: int) -> Statement:
    queues = ", ".join(f":q{i}" for i in range(queue_count))
    return _typed(f"""
        UPDATE queue_work_orders AS w SET {_LEASE_SET.format(least="MIN")}
        WHERE seq IN (
            SELECT seq FROM queue_work_orders
            WHERE {_ELIGIBLE.format(queue="queue").replace("queue = queue", f"queue IN ({queues})")}
            ORDER BY priority DESC, seq
            LIMIT :limit)
        RETURNING *""")


@functools.lru_cache(maxsize=256)  # built once per shape, not per call
def lease_chosen(postgres: bool, count: int) -> Statement:
    """Lease exactly the chosen rows (flow-controlled path; the queue row is locked)."""
    seqs = ", ".join(f":s{i}" for i in range(count))
    if not postgres:
        return _typed(f"""
            UPDATE queue_work_orders AS w SET {_LEASE_SET.format(least="MIN")}
            WHERE w.seq IN ({seqs}) AND w.state = 'QUEUED'
            RETURNING *""")
    return _typed(f"""
        WITH leased AS (
            UPDATE queue_work_orders AS w SET {_LEASE_SET.format(least="LEAST")}
            WHERE w.seq IN ({seqs}) AND w.state = 'QUEUED'
            RETURNING w.*),
        {
        _HISTORY.format(
            source="leased", from_state="'QUEUED'", reason="'leased'", actor="CAST(:worker AS TEXT)"
        )
    }
        SELECT * FROM leased""")


# Round-robin candidates of a flow-controlled queue: rank each order within its
# (key, priority), then take ranks in turn, keys served least recently first.
FAIR_CANDIDATES = text("""
    SELECT c.seq, c.concurrency_key
    FROM (
        SELECT seq, concurrency_key, priority,
               ROW_NUMBER() OVER (PARTITION BY concurrency_key, priority ORDER BY seq) AS rk
        FROM queue_work_orders
        WHERE namespace = :ns AND queue = :q0 AND state = 'QUEUED' AND available_at <= :now
          AND (deadline_at IS NULL OR deadline_at > :now)
    ) AS c
    LEFT JOIN queue_keys AS k
      ON k.namespace = :ns AND k.queue = :q0 AND k.concurrency_key = c.concurrency_key
    WHERE c.rk <= :max_rank
    ORDER BY c.priority DESC, c.rk, COALESCE(k.last_served, 0), c.seq
    LIMIT :scan
""")

FIFO_CANDIDATES = text(f"""
    SELECT seq, concurrency_key FROM queue_work_orders
    WHERE {_ELIGIBLE.format(queue=":q0")}
    ORDER BY priority DESC, seq
    LIMIT :limit
""")

IN_FLIGHT_BY_KEY = text("""
    SELECT concurrency_key, COUNT(*) AS n FROM queue_work_orders
    WHERE namespace = :ns AND queue = :q0 AND state = 'LEASED'
    GROUP BY concurrency_key
""")

IN_FLIGHT = text("""
    SELECT COUNT(*) FROM queue_work_orders
    WHERE namespace = :ns AND queue = :q0 AND state = 'LEASED'
""")

LOCK_QUEUE_POSTGRES = text("""
    SELECT dispatch_seq FROM queue_queues WHERE namespace = :ns AND queue = :q0 FOR UPDATE
""")

# Batch completion in one statement: the items arrive as parallel arrays.
# {returning} is `w.*` for a single completion (the answer is the whole order),
# or only what the history rows and the engine's spans and wake-ups need.
_COMPLETE_MANY_POSTGRES = f"""
    WITH done AS (
        UPDATE queue_work_orders AS w SET
            state = 'SUCCEEDED', result = v.result, result_content_type = v.content_type,
            completed_at = :now, updated_at = :now, lease_token = NULL, lease_expires_at = NULL
        FROM unnest(CAST(:ids AS uuid[]), CAST(:queues AS text[]), CAST(:tokens AS text[]),
                    CAST(:results AS bytea[]), CAST(:content_types AS text[]))
             AS v(id, queue, token, result, content_type)
        WHERE w.id = v.id AND w.namespace = :ns AND w.queue = v.queue AND w.lease_token = v.token
          AND w.state = 'LEASED' AND w.lease_expires_at > :now
        RETURNING {{returning}}),
    {_HISTORY.format(source="done", from_state="'LEASED'", reason="'completed'", actor="''")}
    SELECT * FROM done
"""
COMPLETE_MANY_POSTGRES = _typed(_COMPLETE_MANY_POSTGRES.format(returning="w.*"))
BRIEF_COMPLETED_COLUMNS = (
    "id",
    "namespace",
    "queue",
    "state",
    "attempt",
    "correlation_id",
    "traceparent",
    "updated_at",  # the history row's instant
)
COMPLETE_MANY_BRIEF_POSTGRES = text(
    _COMPLETE_MANY_POSTGRES.format(returning=", ".join(f"w.{c}" for c in BRIEF_COMPLETED_COLUMNS))
).columns(*(work_orders.c[c] for c in BRIEF_COMPLETED_COLUMNS))

SUBMIT_POSTGRES = _typed(
    SUBMIT_POSTGRES_SQL.format(
        history=_HISTORY.format(
            source="inserted", from_state="NULL", reason="'submitted'", actor="''"
        )
    )
)
