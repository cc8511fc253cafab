"""Reads of work orders and their history."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import and_, func, or_, select

from conveyor_core.clock import from_micros, to_micros
from conveyor_queue.domain.model import (
    QueueRef,
    WorkOrder,
    WorkOrderEvent,
    WorkOrderRef,
    WorkOrderState,
)
from conveyor_queue.errors import WorkOrderNotFound
from conveyor_queue.store.base import ListParams
from conveyor_queue.store.rows import event_from_row, order_from_row
from conveyor_queue.store.sql_base import SqlStoreBase
from conveyor_queue.store.tables import work_order_events, work_orders

wo = work_orders.c


class ReadSql(SqlStoreBase):
    """Get, list, history, position and wait samples."""

    async def work_order_get(self, ref: WorkOrderRef) -> WorkOrder:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(work_orders).where(wo.id == ref.id))).first()
        if row is None or (row.namespace, row.queue) != (ref.namespace, ref.queue):
            raise WorkOrderNotFound(ref)
        return order_from_row(row._mapping)

    async def work_order_list(self, params: ListParams) -> list[tuple[int, WorkOrder]]:
        conditions = [wo.namespace == params.queue.namespace]
        if params.queue.queue != "-":
            conditions.append(wo.queue == params.queue.queue)
        if params.states:
            conditions.append(wo.state.in_([s.value for s in params.states]))
        if params.concurrency_key is not None:
            conditions.append(wo.concurrency_key == params.concurrency_key)
        if params.error_type is not None:
            conditions.append(wo.failure["type"].as_string() == params.error_type)
        if params.after_seq is not None:
            conditions.append(
                wo.seq < params.after_seq if params.newest_first else wo.seq > params.after_seq
            )
        order = wo.seq.desc() if params.newest_first else wo.seq.asc()
        async with self._engine.connect() as conn:
            result = await conn.execute(
                select(work_orders).where(and_(*conditions)).order_by(order).limit(params.limit)
            )
            return [(row.seq, order_from_row(row._mapping)) for row in result]

    async def work_order_events_list(
        self, ref: WorkOrderRef, after_seq: int, limit: int
    ) -> list[WorkOrderEvent]:
        await self.work_order_get(ref)
        ev = work_order_events.c
        async with self._engine.connect() as conn:
            result = await conn.execute(
                select(work_order_events)
                .where(ev.work_order_id == ref.id, ev.seq > after_seq)
                .order_by(ev.seq)
                .limit(limit)
            )
            return [event_from_row(row._mapping) for row in result]

    async def work_order_count_ahead(self, order: WorkOrder, now: datetime) -> int:
        horizon = to_micros(max(now, order.available_at))
        async with self._engine.connect() as conn:
            seq = (await conn.execute(select(wo.seq).where(wo.id == order.id))).scalar_one()
            return (
                await conn.execute(
                    select(func.count())
                    .select_from(work_orders)
                    .where(
                        wo.namespace == order.namespace,
                        wo.queue == order.queue,
                        wo.state == WorkOrderState.QUEUED.value,
                        wo.available_at <= horizon,
                        or_(
                            wo.priority > order.spec.priority,
                            and_(wo.priority == order.spec.priority, wo.seq < seq),
                        ),
                    )
                )
            ).scalar_one()

    async def work_order_next_available(
        self, namespace: str, queue_names: Sequence[str], now: datetime
    ) -> datetime | None:
        async with self._engine.connect() as conn:
            value = (
                await conn.execute(
                    select(func.min(wo.available_at)).where(
                        wo.namespace == namespace,
                        wo.queue.in_(queue_names),
                        wo.state == WorkOrderState.QUEUED.value,
                        wo.available_at > to_micros(now),
                    )
                )
            ).scalar()
        return None if value is None else from_micros(value)

    async def work_order_wait_samples(
        self, queue: QueueRef, since: datetime, limit: int
    ) -> list[timedelta]:
        async with self._engine.connect() as conn:
            result = await conn.execute(
                select((wo.leased_at - wo.available_at).label("wait"))
                .where(
                    wo.namespace == queue.namespace,
                    wo.queue == queue.queue,
                    wo.leased_at >= to_micros(since),
                    wo.leased_at >= wo.available_at,
                )
                .order_by(wo.seq.desc())
                .limit(limit)
            )
            return [timedelta(microseconds=row.wait) for row in result]
