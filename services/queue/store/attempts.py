"""What a lease holder does: heartbeat, complete, fail; and cancel."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from conveyor_core.clock import to_micros
from conveyor_core.poison import describe
from conveyor_queue.domain.model import CompletedWorkOrder, WorkOrder, WorkOrderRef, WorkOrderState
from conveyor_queue.errors import InvalidState, StaleLease, WorkOrderNotFound, WorkOrderQuarantined
from conveyor_queue.store import queries
from conveyor_queue.store.base import CancelParams, CompleteParams, FailParams, HeartbeatParams
from conveyor_queue.store.history import event_row, insert_events
from conveyor_queue.store.poison import Poisoned, quarantine
from conveyor_queue.store.rows import failure_to_json, order_from_row, us
from conveyor_queue.store.sql_base import SqlStoreBase
from conveyor_queue.store.tables import work_orders

wo = work_orders.c


class AttemptSql(SqlStoreBase):
    """Lease-holder calls, the end of an attempt, cancel."""

    async def _locked_leased(
        self, conn: AsyncConnection, ref: WorkOrderRef, token: str, now_us: int
    ) -> Any:
        """The order's row, locked, if `token` is its live lease; else raise."""
        stmt = select(work_orders).where(wo.id == ref.id)
        if self._postgres:
            stmt = stmt.with_for_update()
        row = (await conn.execute(stmt)).first()
        if row is None or row.namespace != ref.namespace or row.queue != ref.queue:
            raise WorkOrderNotFound(ref)
        if (
            row.state != WorkOrderState.LEASED.value
            or row.lease_token != token
            or row.lease_expires_at <= now_us
        ):
            raise StaleLease(ref, WorkOrderState(row.state))
        return row

    async def work_order_heartbeat(self, params: HeartbeatParams) -> WorkOrder:
        now_us = to_micros(params.now)
        async with self._engine.begin() as conn:
            row = await self._locked_leased(conn, params.ref, params.lease_token, now_us)
            lease_us = us(params.lease_duration) or row.lease_duration_us
            limits = [now_us + lease_us]
            if row.heartbeat_timeout_us:
                limits.append(now_us + row.heartbeat_timeout_us)
            if row.start_to_close_us:
                limits.append(row.leased_at + row.start_to_close_us)
            values: dict[str, Any] = {
                "lease_expires_at": min(limits),
                "heartbeat_at": now_us,
                "updated_at": now_us,
            }
            if params.progress is not None:
                values["progress_percent"] = params.progress.percent
                values["progress_message"] = params.progress.message
            result = await conn.execute(
                update(work_orders)
                .where(wo.seq == row.seq)
                .values(**values)
                .returning(*work_orders.columns)
            )
            return order_from_row(result.one()._mapping)

    async def work_order_complete_many(
        self, items: Sequence[CompleteParams], now: datetime, brief: bool = False
    ) -> list[WorkOrder | CompletedWorkOrder | Exception]:
        now_us = to_micros(now)
        done: dict[uuid.UUID, WorkOrder | CompletedWorkOrder]
        states: dict[uuid.UUID, WorkOrderState] = {}
        if self._postgres:  # the statement also writes the "completed" history rows
            done = await self._complete_postgres(items, now_us, brief)
            missing = [i.ref for i in items if i.ref.id not in done]
            if missing:  # why not: stale lease or no such order
                async with self._autocommit.connect() as conn:
                    states = await self._states(conn, missing)
        else:
            async with self._engine.begin() as conn:
                each = await self._complete_each(conn, items, now_us)
                await insert_events(
                    conn,
                    [
                        event_row(o, WorkOrderState.LEASED, "completed", actor="", at_us=now_us)
                        for o in each.values()
                    ],
                )
                done = dict(each)
                missing = [i.ref for i in items if i.ref.id not in done]
                states = await self._states(conn, missing)
        out: list[WorkOrder | CompletedWorkOrder | Exception] = []
        for item in items:
            if item.ref.id in done:
                out.append(done[item.ref.id])
            elif item.ref.id in states:
                out.append(StaleLease(item.ref, states[item.ref.id]))
            else:
                out.append(WorkOrderNotFound(item.ref))
        return out

    async def _complete_postgres(
        self, items: Sequence[CompleteParams], now_us: int, brief: bool
    ) -> dict[uuid.UUID, WorkOrder | CompletedWorkOrder]:
        namespace = items[0].ref.namespace if items else ""
        result = await self._raw.fetch(  # a generic plan scans every order in flight
            queries.COMPLETE_MANY_BRIEF_POSTGRES if brief else queries.COMPLETE_MANY_POSTGRES,
            {
                "ns": namespace,
                "now": now_us,
                "ids": [i.ref.id for i in items],
                "queues": [i.ref.queue for i in items],
                "tokens": [i.lease_token for i in items],
                "results": [i.result.data for i in items],
                "content_types": [i.result.content_type for i in items],
            },
            custom_plans=True,
        )
        if brief:  # building whole orders was a fifth of the server's time in a drain
            return {
                row["id"]: CompletedWorkOrder(
                    row["id"],
                    row["namespace"],
                    row["queue"],
                    WorkOrderState(row["state"]),
                    row["attempt"],
                    row["correlation_id"],
                    row["traceparent"],
                )
                for row in result
            }
        return {row["id"]: order_from_row(row) for row in result}

    async def _complete_each(
        self, conn: AsyncConnection, items: Sequence[CompleteParams], now_us: int
    ) -> dict[uuid.UUID, WorkOrder]:
        done = {}
        for item in items:
            result = await conn.execute(
                update(work_orders)
                .where(
                    wo.id == item.ref.id,
                    wo.namespace == item.ref.namespace,
                    wo.queue == item.ref.queue,
                    wo.lease_token == item.lease_token,
                    wo.state == WorkOrderState.LEASED.value,
                    wo.lease_expires_at > now_us,
                )
                .values(
                    state=WorkOrderState.SUCCEEDED.value,
                    result=item.result.data,
                    result_content_type=item.result.content_type,
                    completed_at=now_us,
                    updated_at=now_us,
                    lease_token=None,
                    lease_expires_at=None,
                )
                .returning(*work_orders.columns)
            )
            row = result.first()
            if row is not None:
                done[row.id] = order_from_row(row._mapping)
        return done

    async def _states(
        self, conn: AsyncConnection, refs: list[WorkOrderRef]
    ) -> dict[uuid.UUID, WorkOrderState]:
        if not refs:
            return {}
        result = await conn.execute(
            select(wo.id, wo.state, wo.namespace, wo.queue).where(wo.id.in_([r.id for r in refs]))
        )
        wanted = {r.id: r for r in refs}
        return {
            row.id: WorkOrderState(row.state)
            for row in result
            if (row.namespace, row.queue) == (wanted[row.id].namespace, wanted[row.id].queue)
        }

    async def work_order_fail(self, params: FailParams) -> WorkOrder:
        now_us = to_micros(params.now)
        async with self._engine.begin() as conn:
            row = await self._locked_leased(conn, params.ref, params.lease_token, now_us)
            try:
                outcome = params.plan.outcome(order_from_row(row._mapping))
            except Exception as error:  # a row no submit stores today (store/poison.py)
                poisoned = Poisoned("fail")
                await quarantine(conn, row.seq, poisoned, error, now_us)
                cause = describe(error)
            else:
                return await self.end_attempt(
                    conn,
                    row,
                    outcome.state,
                    outcome.available_at,
                    outcome.reason,
                    now_us,
                    failure=params.plan.failure,
                    actor=row.leased_by,
                )
        poisoned.report()
        raise WorkOrderQuarantined(params.ref, cause)

    async def end_attempt(
        self,
        conn: AsyncConnection,
        row: Any,
        state: WorkOrderState,
        available_at: datetime | None,
        reason: str,
        now_us: int,
        *,
        failure: Any = None,
        timeout_kind: Any = None,
        actor: str = "",
    ) -> WorkOrder:
        """Move a LEASED order to its next state after an attempt ended unsuccessfully."""
        values: dict[str, Any] = {
            "state": state.value,
            "lease_token": None,
            "lease_expires_at": None,
            "updated_at": now_us,
            "failure": failure_to_json(failure) if failure else row.failure,
            "timeout_kind": timeout_kind.value if timeout_kind else row.timeout_kind,
        }
        if state is WorkOrderState.QUEUED:
            values["available_at"] = to_micros(available_at) if available_at else now_us
        else:
            values["completed_at"] = now_us
        result = await conn.execute(
            update(work_orders)
            .where(wo.seq == row.seq)
            .values(**values)
            .returning(*work_orders.columns)
        )
        order = order_from_row(result.one()._mapping)
        await insert_events(
            conn,
            [
                event_row(
                    order,
                    WorkOrderState(row.state),
                    reason,
                    actor=actor,
                    at_us=now_us,
                    failure=failure,
                    timeout_kind=timeout_kind,
                )
            ],
        )
        return order

    async def work_order_cancel(self, params: CancelParams) -> WorkOrder:
        now_us = to_micros(params.now)
        async with self._engine.begin() as conn:
            stmt = select(work_orders).where(wo.id == params.ref.id)
            if self._postgres:
                stmt = stmt.with_for_update()
            row = (await conn.execute(stmt)).first()
            if row is None or (row.namespace, row.queue) != (
                params.ref.namespace,
                params.ref.queue,
            ):
                raise WorkOrderNotFound(params.ref)
            state = WorkOrderState(row.state)
            if state is WorkOrderState.CANCELLED or (
                state is WorkOrderState.LEASED and row.cancel_requested
            ):
                return order_from_row(row._mapping)
            if state.terminal:
                raise InvalidState(params.ref, state, "cancel")
            if state is WorkOrderState.QUEUED:
                values = {"state": WorkOrderState.CANCELLED.value, "completed_at": now_us}
                reason = f"cancelled: {params.reason}" if params.reason else "cancelled"
            else:
                values = {"cancel_requested": True}
                reason = "cancel requested" + (f": {params.reason}" if params.reason else "")
            result = await conn.execute(
                update(work_orders)
                .where(wo.seq == row.seq)
                .values(updated_at=now_us, **values)
                .returning(*work_orders.columns)
            )
            order = order_from_row(result.one()._mapping)
            await insert_events(
                conn, [event_row(order, state, reason, actor=params.actor, at_us=now_us)]
            )
            return order
