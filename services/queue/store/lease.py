"""Leasing: plain queues in one statement, flow-controlled queues under a row lock."""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from asyncpg import Record
from sqlalchemy import RowMapping, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from conveyor_core.clock import to_micros
from conveyor_queue.domain import flow
from conveyor_queue.domain.model import LeasedWorkOrder, QueueConfig, WorkOrder, WorkOrderState
from conveyor_queue.store import queries
from conveyor_queue.store.base import LeaseParams, TokenGate
from conveyor_queue.store.history import event_row, insert_events
from conveyor_queue.store.rows import FAR_FUTURE_US, order_from_row, queue_from_row, us
from conveyor_queue.store.sql_base import SqlStoreBase
from conveyor_queue.store.tables import queue_keys, queues


class LeaseSql(SqlStoreBase):
    """work_order_lease_available and the flow-control helpers."""

    async def work_order_lease_available(
        self, params: LeaseParams, gate: TokenGate
    ) -> list[LeasedWorkOrder]:
        token = secrets.token_hex(16)
        now_us = to_micros(params.now)
        base = {
            "ns": params.namespace,
            "now": now_us,
            "lease_us": us(params.lease_duration),
            "token": token,
            "worker": params.worker,
            "far": FAR_FUTURE_US,
        }
        configs = await self._cached_configs(params.namespace, params.queues)
        plain = [
            q
            for q in params.queues
            if not configs.get(q, _PLAIN).flow_controlled and not configs.get(q, _PLAIN).paused
        ]
        flowing = [
            configs[q]
            for q in params.queues
            if configs.get(q, _PLAIN).flow_controlled and not configs[q].paused
        ]
        rows: list[Any]
        if self._postgres and not flowing:
            # Plain queues lease in one self-contained statement (data-modifying CTE that
            # also writes the history rows), in autocommit: no BEGIN and COMMIT round trips.
            rows = []
            if plain:
                rows = await self._raw.fetch(
                    *self._lease_plain_statement(plain, params.limit, base)
                )
            return [LeasedWorkOrder(o, token) for o in _by_priority(rows)]
        # Flow control needs a transaction around its lock, counts and update.
        async with self._engine.begin() as conn:
            history_in_sql = self._postgres  # the lease statement writes the history rows
            rows = []
            if plain:
                rows += list(
                    await conn.execute(*self._lease_plain_statement(plain, params.limit, base))
                )
            for config in flowing:
                if len(rows) >= params.limit:
                    break
                rows += await self._lease_flow(
                    conn, config, params, base, gate, params.limit - len(rows)
                )
            leased = _by_priority([r._mapping for r in rows])
            if not history_in_sql:
                await insert_events(
                    conn,
                    [
                        event_row(
                            o, WorkOrderState.QUEUED, "leased", actor=params.worker, at_us=now_us
                        )
                        for o in leased
                    ],
                )
        return [LeasedWorkOrder(o, token) for o in leased]

    def _lease_plain_statement(
        self, names: list[str], limit: int, base: dict[str, Any]
    ) -> tuple[queries.Statement, dict[str, Any]]:
        """The lease statement of plain queues, and its parameters."""
        sql = (queries.lease_fifo_postgres if self._postgres else queries.lease_fifo_sqlite)(
            len(names)
        )  # on PostgreSQL the statement also writes the "leased" history rows
        return sql, {**base, "limit": limit, **{f"q{i}": name for i, name in enumerate(names)}}

    async def _lease_flow(
        self,
        conn: AsyncConnection,
        config: QueueConfig,
        params: LeaseParams,
        base: dict[str, Any],
        gate: TokenGate,
        budget: int,
    ) -> list[Any]:
        bind = {"ns": config.namespace, "q0": config.queue, "now": base["now"]}
        # Serialise leasers of this queue (counts must stay true) and read its
        # settings afresh under the lock rather than trusting the cached copy.
        stmt = select(queues).where(
            queues.c.namespace == config.namespace, queues.c.queue == config.queue
        )
        if self._postgres:
            stmt = stmt.with_for_update()
        row = (await conn.execute(stmt)).first()
        if row is None:
            return []
        config, dispatch_seq = queue_from_row(row._mapping), row.dispatch_seq
        if config.paused:
            return []
        if config.max_in_flight:
            in_flight = (await conn.execute(queries.IN_FLIGHT, bind)).scalar() or 0
            budget = min(budget, config.max_in_flight - in_flight)
        if budget <= 0:
            return []
        chosen = await self._flow_candidates(conn, config, bind, budget, params.fair_scan_limit)
        chosen = await self._apply_rate_limits(config, chosen, gate)
        if not chosen:
            return []
        sql = queries.lease_chosen(self._postgres, len(chosen))
        rows = list(
            await conn.execute(sql, {**base, **{f"s{i}": c.seq for i, c in enumerate(chosen)}})
        )
        if config.per_key and rows:
            await self._mark_served(conn, config, chosen, dispatch_seq)
        return rows

    async def _flow_candidates(
        self,
        conn: AsyncConnection,
        config: QueueConfig,
        bind: dict[str, Any],
        budget: int,
        scan: int,
    ) -> list[flow.Candidate]:
        if not config.per_key:
            result = await conn.execute(queries.FIFO_CANDIDATES, {**bind, "limit": budget})
            return [flow.Candidate(r.seq, r.concurrency_key) for r in result]
        result = await conn.execute(
            queries.FAIR_CANDIDATES, {**bind, "max_rank": budget, "scan": scan}
        )
        candidates = [flow.Candidate(r.seq, r.concurrency_key) for r in result]
        room = None
        if config.max_in_flight_per_key:
            in_flight = {
                r.concurrency_key: r.n for r in await conn.execute(queries.IN_FLIGHT_BY_KEY, bind)
            }
            room = {
                c.concurrency_key: config.max_in_flight_per_key
                - in_flight.get(c.concurrency_key, 0)
                for c in candidates
            }
        return flow.pick(candidates, budget, room)

    async def _apply_rate_limits(
        self, config: QueueConfig, chosen: list[flow.Candidate], gate: TokenGate
    ) -> list[flow.Candidate]:
        if chosen and config.rate_limit:
            granted = await gate.take(
                f"rate:{config.namespace}/{config.queue}", len(chosen), config.rate_limit
            )
            chosen = chosen[:granted]
        if chosen and config.rate_limit_per_key:
            wanted: dict[str, int] = {}
            for c in chosen:
                wanted[c.concurrency_key] = wanted.get(c.concurrency_key, 0) + 1
            granted_by_key = {
                key: await gate.take(
                    f"rate:{config.namespace}/{config.queue}/key:{key}",
                    n,
                    config.rate_limit_per_key,
                )
                for key, n in wanted.items()
            }
            chosen = flow.trim_per_key(chosen, granted_by_key)
        return chosen

    async def _mark_served(
        self, conn: AsyncConnection, config: QueueConfig, chosen: list[flow.Candidate], seq: int
    ) -> None:
        served: dict[str, int] = {}
        for i, c in enumerate(chosen, start=1):
            served[c.concurrency_key] = seq + i
        stmt = self._insert(queue_keys)
        stmt = stmt.on_conflict_do_update(
            index_elements=["namespace", "queue", "concurrency_key"],
            set_={"last_served": stmt.excluded.last_served},
        )
        await conn.execute(
            stmt,
            [
                {
                    "namespace": config.namespace,
                    "queue": config.queue,
                    "concurrency_key": key,
                    "last_served": last,
                }
                for key, last in served.items()
            ],
        )
        await conn.execute(
            update(queues)
            .where(queues.c.namespace == config.namespace, queues.c.queue == config.queue)
            .values(dispatch_seq=seq + len(chosen))
        )


_PLAIN = QueueConfig("", "")


def _by_priority(rows: Sequence[RowMapping | Mapping[str, Any] | Record]) -> list[WorkOrder]:
    """Leased rows as orders, highest priority first, then oldest first."""
    return sorted(map(order_from_row, rows), key=lambda o: (-o.spec.priority, o.created_at))
