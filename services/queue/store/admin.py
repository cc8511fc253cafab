"""Queue settings, depth and dead-letter redrives."""

from __future__ import annotations

import time
from datetime import datetime

from sqlalchemy import func, select

from conveyor_core.clock import from_micros, to_micros
from conveyor_queue.domain.model import QueueConfig, QueueRef, Redrive, WorkOrderState
from conveyor_queue.store.base import QueueDepth, RedriveParams
from conveyor_queue.store.redrive import run_redrive
from conveyor_queue.store.rows import queue_from_row, queue_to_row, redrive_from_row
from conveyor_queue.store.sql_base import SqlStoreBase
from conveyor_queue.store.tables import queues, redrives, work_orders

wo = work_orders.c


class QueueAdminSql(SqlStoreBase):
    """Queue settings, depth, redrives."""

    async def queue_get(self, ref: QueueRef) -> QueueConfig:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(queues).where(
                        queues.c.namespace == ref.namespace, queues.c.queue == ref.queue
                    )
                )
            ).first()
        return queue_from_row(row._mapping) if row else QueueConfig(ref.namespace, ref.queue)

    async def queue_upsert(
        self, config: QueueConfig, fields: frozenset[str], now: datetime
    ) -> QueueConfig:
        now_us = to_micros(now)
        values = queue_to_row(config)
        changed = {k: v for k, v in values.items() if _field_of(k) in fields}
        stmt = self._insert(queues).values(
            namespace=config.namespace,
            queue=config.queue,
            created_at=now_us,
            updated_at=now_us,
            **values,
        )
        upsert = stmt.on_conflict_do_update(
            index_elements=["namespace", "queue"], set_={**changed, "updated_at": now_us}
        ).returning(*queues.columns)
        async with self._engine.begin() as conn:
            row = (await conn.execute(upsert)).one()
        self._known_queues.add((config.namespace, config.queue))
        updated = queue_from_row(row._mapping)
        self._configs[(config.namespace, config.queue)] = (
            time.monotonic() + self._config_ttl,
            updated,
        )
        return updated

    async def queue_list(self, namespace: str, after: str, limit: int) -> list[QueueConfig]:
        async with self._engine.connect() as conn:
            result = await conn.execute(
                select(queues)
                .where(queues.c.namespace == namespace, queues.c.queue > after)
                .order_by(queues.c.queue)
                .limit(limit)
            )
            return [queue_from_row(row._mapping) for row in result]

    async def queue_depth(self, ref: QueueRef) -> QueueDepth:
        where = (wo.namespace == ref.namespace, wo.queue == ref.queue)
        async with self._engine.connect() as conn:
            counts = {
                WorkOrderState(row.state): row.n
                for row in await conn.execute(
                    select(wo.state, func.count().label("n")).where(*where).group_by(wo.state)
                )
            }
            oldest = (
                await conn.execute(
                    select(func.min(wo.available_at)).where(
                        *where, wo.state == WorkOrderState.QUEUED.value
                    )
                )
            ).scalar()
        return QueueDepth(
            counts,
            counts.get(WorkOrderState.LEASED, 0),
            None if oldest is None else from_micros(oldest),
        )

    # -- dead letters -------------------------------------------------------------

    async def redrive_run(self, params: RedriveParams) -> Redrive:
        return await run_redrive(self._engine, self._insert, params)

    async def redrive_list(self, ref: QueueRef, offset: int, limit: int) -> list[Redrive]:
        async with self._engine.connect() as conn:
            result = await conn.execute(
                select(redrives)
                .where(redrives.c.namespace == ref.namespace, redrives.c.queue == ref.queue)
                .order_by(redrives.c.created_at.desc(), redrives.c.id)
                .offset(offset)
                .limit(limit)
            )
            return [redrive_from_row(row._mapping) for row in result]


def _field_of(column: str) -> str:
    """The Queue proto field a queue_queues column belongs to (for update masks)."""
    if column.startswith("rate_"):
        return "rate_limit"
    if column.startswith("key_rate_"):
        return "rate_limit_per_key"
    return column
