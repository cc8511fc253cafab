"""PostgreSQL's plan of a handler run's checkpoint (services/executor/store/workflow_pg.py)
on a table without statistics, as autovacuum-off databases and new tables have.

The checkpoint is a prepared statement: after five executions PostgreSQL may keep a
generic plan, made without the parameters. Made while the runs table was empty, the
plan of `namespace = $1 AND handler_run_id = $2` reached the row through the
(namespace, session_id) index and filtered every run of the namespace, and stayed so
as the table filled. The statement seeks the run in the primary key's own order and
updates it by its ctid, which no other index can serve."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import greenlet_spawn

from conveyor_executor.store.workflow_pg import advance_shape

NS = "conformance"  # rebound per test (conftest's namespace fixture)


def _literal(value: object) -> str:
    if isinstance(value, list):
        return "ARRAY[" + ", ".join(_literal(v) for v in value) + "]" if value else "'{}'"
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


async def test_a_checkpoints_generic_plan_finds_the_run_by_its_primary_key(
    executor_db: AsyncEngine,
) -> None:
    if executor_db.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's planner")
    shape = advance_shape(("phase", "updated_at"), ("PREPARED",), True, True)
    key = [NS, "run-1", ["PREPARED"], 3]
    ledger = [NS, "run-1", "shop", "charge", "IN_FLIGHT", 1, None, None, "", None, "", ""]
    ledger += [None, 1, 1, None]
    journal = [["workflow.handler_run.mutating"], [NS], [1], ["{}"], [""], [""], ["{}"]]
    args = ["MUTATING", 1, *key, *ledger, *journal]
    pooled = await executor_db.raw_connection()
    try:
        conn = pooled.driver_connection
        assert conn is not None
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        await conn.execute(f"PREPARE checkpoint AS {shape.sql}")
        call = ", ".join("NULL" if a is None else _literal(a) for a in args)
        rows = await conn.fetch(f"EXPLAIN EXECUTE checkpoint({call})")
        await conn.execute("DEALLOCATE checkpoint")
        await conn.execute("RESET plan_cache_mode")
    finally:
        await greenlet_spawn(pooled.close)
    plan = "\n".join(r[0] for r in rows)
    assert "$1" in plan or "$5" in plan, plan  # generic: made without the parameters
    assert "Index Scan using pk_executor_handler_runs" in plan, plan
    assert "Tid Scan on executor_handler_runs" in plan, plan
    assert "ix_executor_handler_runs_session" not in plan, plan
