"""The grouped query behind the executor's "blocked on a person" gauge (conveyor_executor.metrics).

Handler runs SUSPENDED (an indeterminate mutation waits for ResolveMutation)
per namespace and workflow, with the age of the oldest, through
`ix_executor_handler_runs_phase` (namespace, workflow, phase).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from conveyor_core.clock import to_micros
from conveyor_core.gauges import Snapshot
from conveyor_executor.domain.workflow import Phase
from conveyor_executor.store.tables import handler_runs

hr = handler_runs.c


async def executor_snapshot(engine: AsyncEngine, now: datetime, max_workflows: int) -> Snapshot:
    """`blocked` and `blocked_oldest_age` (seconds) per namespace and workflow."""
    query = (
        select(hr.namespace, hr.workflow, func.count().label("n"), func.min(hr.updated_at))
        .where(hr.phase == Phase.SUSPENDED.value)
        .group_by(hr.namespace, hr.workflow)
        .order_by(func.count().desc())
        .limit(max_workflows)
    )
    now_us = to_micros(now)
    blocked, ages = [], []
    async with engine.connect() as conn:
        for namespace, workflow, n, oldest in await conn.execute(query):
            labels = {"namespace": namespace, "workflow": workflow}
            blocked.append((labels, float(n)))
            ages.append((labels, max(0.0, (now_us - int(oldest)) / 1e6)))
    return {"blocked": blocked, "blocked_oldest_age": ages}
