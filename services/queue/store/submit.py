"""Submitting work orders (idempotency keys, history rows)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from conveyor_core.clock import opt_to_micros, to_micros
from conveyor_queue.domain.model import QueueRef, WorkOrder, WorkOrderState
from conveyor_queue.store import queries
from conveyor_queue.store.base import NewWorkOrder, SubmitResult
from conveyor_queue.store.history import event_row, insert_events
from conveyor_queue.store.rows import order_from_row, policy_to_json, us
from conveyor_queue.store.sql_base import SqlStoreBase
from conveyor_queue.store.tables import queues, work_orders

wo = work_orders.c


class SubmitSql(SqlStoreBase):
    """work_order_insert_many and its helpers."""

    async def work_order_insert_many(
        self, orders: Sequence[NewWorkOrder], now: datetime
    ) -> list[SubmitResult]:
        now_us = to_micros(now)
        rows = [self._new_row(o, now_us) for o in orders]
        refs = {o.queue for o in orders}
        if self._postgres:  # one statement: the orders and their history rows
            if any((r.namespace, r.queue) not in self._known_queues for r in refs):
                async with self._autocommit.connect() as conn:
                    await self._ensure_queues(conn, refs, now_us)
            result = await self._raw.fetch(
                queries.SUBMIT_POSTGRES, queries.submit_params(rows, now_us)
            )
            inserted = {row["id"]: order_from_row(row) for row in result}
            existing = {}
            if len(inserted) < len(orders):  # idempotency keys already taken
                async with self._autocommit.connect() as conn:
                    existing = await self._existing_by_key(conn, orders, inserted)
        else:
            async with self._engine.begin() as conn:
                await self._ensure_queues(conn, refs, now_us)
                inserted = await self._submit_sqlite(conn, rows, now_us)
                existing = await self._existing_by_key(conn, orders, inserted)
        out = []
        for order in orders:
            if order.id in inserted:
                out.append(SubmitResult(inserted[order.id], already_exists=False))
            else:
                key = (order.queue.namespace, order.spec.idempotency_key)
                out.append(SubmitResult(existing[key], already_exists=True))
        return out

    async def _submit_sqlite(
        self, conn: AsyncConnection, rows: list[dict[str, Any]], now_us: int
    ) -> dict[uuid.UUID, WorkOrder]:
        stmt = (
            self._insert(work_orders)
            .on_conflict_do_nothing(
                index_elements=["namespace", "idempotency_key"],
                index_where=wo.idempotency_key.isnot(None),
            )
            .returning(*work_orders.columns)
        )
        result = await conn.execute(stmt, rows)
        inserted = {row.id: order_from_row(row._mapping) for row in result}
        await insert_events(
            conn,
            [event_row(o, None, "submitted", actor="", at_us=now_us) for o in inserted.values()],
        )
        return inserted

    def _new_row(self, o: NewWorkOrder, now_us: int) -> dict[str, Any]:
        spec = o.spec
        return {
            "id": o.id,
            "namespace": o.queue.namespace,
            "queue": o.queue.queue,
            "state": WorkOrderState.QUEUED.value,
            "priority": spec.priority,
            "payload": spec.payload.data,
            "content_type": spec.payload.content_type,
            "idempotency_key": spec.idempotency_key,
            "concurrency_key": spec.concurrency_key,
            "labels": dict(spec.labels),
            "not_before": opt_to_micros(spec.not_before),
            "available_at": max(now_us, opt_to_micros(spec.not_before) or 0),
            "deadline_at": opt_to_micros(spec.deadline),
            "start_to_close_us": us(spec.start_to_close_timeout),
            "heartbeat_timeout_us": us(spec.heartbeat_timeout),
            "retry_policy": policy_to_json(spec.retry_policy),
            "max_attempts": spec.retry_policy.maximum_attempts,
            "attempt": 0,
            "lease_token": None,
            "leased_by": "",
            "lease_duration_us": 0,
            "cancel_requested": False,
            "correlation_id": o.correlation_id,
            "traceparent": o.traceparent,
            "redrive_count": 0,
            "created_at": now_us,
            "updated_at": now_us,
        }

    async def _existing_by_key(
        self,
        conn: AsyncConnection,
        orders: Sequence[NewWorkOrder],
        inserted: Mapping[uuid.UUID, WorkOrder],
    ) -> dict[tuple[str, str | None], WorkOrder]:
        missing = [o for o in orders if o.id not in inserted]
        if not missing:
            return {}
        by_namespace: dict[str, list[str]] = {}
        for o in missing:
            by_namespace.setdefault(o.queue.namespace, []).append(o.spec.idempotency_key or "")
        found: dict[tuple[str, str | None], WorkOrder] = {}
        for namespace, keys in by_namespace.items():
            result = await conn.execute(
                select(work_orders).where(wo.namespace == namespace, wo.idempotency_key.in_(keys))
            )
            for row in result:
                found[(namespace, row.idempotency_key)] = order_from_row(row._mapping)
        return found

    async def _ensure_queues(self, conn: AsyncConnection, refs: set[QueueRef], now_us: int) -> None:
        new = [r for r in refs if (r.namespace, r.queue) not in self._known_queues]
        if not new:
            return
        await conn.execute(
            self._insert(queues).on_conflict_do_nothing(),
            [
                {
                    "namespace": r.namespace,
                    "queue": r.queue,
                    "created_at": now_us,
                    "updated_at": now_us,
                }
                for r in new
            ],
        )
        self._known_queues.update((r.namespace, r.queue) for r in new)
