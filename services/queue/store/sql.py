"""SQLAlchemy implementation of WorkOrderStore for PostgreSQL and SQLite."""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import TextClause, and_, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from conveyor_core.clock import from_micros, opt_to_micros, to_micros
from conveyor_core.poison import describe
from conveyor_queue.domain import flow
from conveyor_queue.domain.model import (
    CompletedWorkOrder,
    LeasedWorkOrder,
    QueueConfig,
    QueueRef,
    Redrive,
    WorkOrder,
    WorkOrderEvent,
    WorkOrderRef,
    WorkOrderState,
)
from conveyor_queue.domain.retry import after_failed_attempt
from conveyor_queue.errors import InvalidState, StaleLease, WorkOrderNotFound, WorkOrderQuarantined
from conveyor_queue.store import queries
from conveyor_queue.store.base import (
    CancelParams,
    CompleteParams,
    FailParams,
    HeartbeatParams,
    LeaseParams,
    ListParams,
    NewWorkOrder,
    QueueDepth,
    RedriveParams,
    SubmitResult,
    TokenGate,
)
from conveyor_queue.store.expiry import expire_deadlines, expire_leases
from conveyor_queue.store.history import event_row, insert_events
from conveyor_queue.store.poison import (
    Poisoned,
    fetch_tolerant,
    quarantine,
    quarantine_leased,
    readable_orders,
)
from conveyor_queue.store.raw import RawStatements
from conveyor_queue.store.redrive import run_redrive
from conveyor_queue.store.rows import (
    FAR_FUTURE_US,
    event_from_row,
    failure_to_json,
    order_from_row,
    policy_to_json,
    queue_from_row,
    queue_to_row,
    redrive_from_row,
    us,
)
from conveyor_queue.store.tables import queue_keys, queues, redrives, work_order_events, work_orders

wo = work_orders.c


class SqlWorkOrderStore:
    """WorkOrderStore over one async engine (PostgreSQL or SQLite)."""

    def __init__(
        self,
        engine: AsyncEngine,
        config_cache_seconds: float = 1.0,
        hot_connections: int = 0,
        hot_connection_seconds: float = 1800.0,
    ) -> None:
        self._engine = engine
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._postgres = engine.dialect.name == "postgresql"
        self._insert = postgresql.insert if self._postgres else sqlite.insert
        # PostgreSQL hot paths, in autocommit, on connections kept between statements.
        self._raw = RawStatements(engine, hot_connections, hot_connection_seconds)
        self._known_queues: set[tuple[str, str]] = set()
        # Queue settings decide which lease path runs; a short-lived copy saves a
        # query per lease. Flow-controlled leasing re-reads them under the row lock.
        self._config_ttl = config_cache_seconds
        self._configs: dict[tuple[str, str], tuple[float, QueueConfig]] = {}

    # -- submit -------------------------------------------------------------

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
        self, conn: AsyncConnection, orders: Sequence[NewWorkOrder], inserted: dict
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

    # -- lease --------------------------------------------------------------

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
            read, unreadable = readable_orders(rows)
            if unreadable:  # leased already (autocommit): quarantine them, hand out the rest
                async with self._engine.begin() as conn:
                    poisoned = await quarantine_leased(
                        conn, token, [s for s, _ in read], unreadable, [], now_us
                    )
                poisoned.report()
            return [LeasedWorkOrder(o, token) for o in _by_priority(read)]
        # Flow control needs a transaction around its lock, counts and update.
        async with self._engine.begin() as conn:
            history_in_sql = self._postgres  # the lease statement writes the history rows
            rows = []
            fetch_errors: list[BaseException] = []
            if plain:
                rows, fetch_errors = fetch_tolerant(
                    await conn.execute(*self._lease_plain_statement(plain, params.limit, base))
                )
            for config in flowing:
                if len(rows) + len(fetch_errors) >= params.limit:
                    break
                rows += await self._lease_flow(
                    conn, config, params, base, gate, params.limit - len(rows), fetch_errors
                )
            read, unreadable = readable_orders(rows)
            leased = _by_priority(read)
            poisoned = None
            if unreadable or fetch_errors:  # quarantine them, hand out the rest
                poisoned = await quarantine_leased(
                    conn, token, [s for s, _ in read], unreadable, fetch_errors, now_us
                )
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
        if poisoned is not None:
            poisoned.report()
        return [LeasedWorkOrder(o, token) for o in leased]

    async def _queue_configs(
        self, conn: AsyncConnection, namespace: str, names: Sequence[str]
    ) -> dict[str, QueueConfig]:
        """Settings of the named queues (a queue never configured is absent)."""
        now = time.monotonic()
        known = {name: self._configs.get((namespace, name)) for name in names}
        stale = [name for name, entry in known.items() if entry is None or entry[0] <= now]
        if stale:
            result = await conn.execute(
                select(queues).where(queues.c.namespace == namespace, queues.c.queue.in_(stale))
            )
            fetched = {row.queue: queue_from_row(row._mapping) for row in result}
            for name in stale:
                config = fetched.get(name, QueueConfig(namespace, name))
                self._configs[(namespace, name)] = (now + self._config_ttl, config)
        return {name: self._configs[(namespace, name)][1] for name in names}

    async def queue_get_cached(self, ref: QueueRef) -> QueueConfig:
        """Settings as this replica last saw them (at most config_cache_seconds old)."""
        return (await self._cached_configs(ref.namespace, [ref.queue]))[ref.queue]

    async def _cached_configs(self, namespace: str, names: Sequence[str]) -> dict[str, QueueConfig]:
        now = time.monotonic()
        entries = [self._configs.get((namespace, name)) for name in names]
        if all(e is not None and e[0] > now for e in entries):
            return {name: e[1] for name, e in zip(names, entries, strict=True)}  # type: ignore[index]
        async with self._autocommit.connect() as conn:
            return await self._queue_configs(conn, namespace, names)

    def _lease_plain_statement(
        self, names: list[str], limit: int, base: dict
    ) -> tuple[TextClause, dict[str, Any]]:
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
        base: dict,
        gate: TokenGate,
        budget: int,
        fetch_errors: list[BaseException],
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
        rows, errors = fetch_tolerant(
            await conn.execute(sql, {**base, **{f"s{i}": c.seq for i, c in enumerate(chosen)}})
        )
        fetch_errors += errors
        if config.per_key and rows:
            await self._mark_served(conn, config, chosen, dispatch_seq)
        return rows

    async def _flow_candidates(
        self, conn: AsyncConnection, config: QueueConfig, bind: dict, budget: int, scan: int
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

    # -- lease holders -------------------------------------------------------

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
                done = await self._complete_each(conn, items, now_us)
                await insert_events(
                    conn,
                    [
                        event_row(o, WorkOrderState.LEASED, "completed", actor="", at_us=now_us)
                        for o in done.values()
                    ],
                )
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
                current = order_from_row(row._mapping)
                outcome = after_failed_attempt(
                    policy=current.spec.retry_policy,
                    attempt=current.attempt,
                    failure=params.failure,
                    cancel_requested=current.cancel_requested,
                    now=params.now,
                    retry_delay=params.retry_delay,
                )
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
                    failure=params.failure,
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

    # -- reads ----------------------------------------------------------------

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

    # -- sweeper ----------------------------------------------------------------

    async def work_order_expire_leases(self, now: datetime, limit: int) -> list[WorkOrder]:
        return await expire_leases(self, self._engine, now, limit)

    async def work_order_expire_deadlines(self, now: datetime, limit: int) -> list[WorkOrder]:
        return await expire_deadlines(self, self._engine, now, limit)

    @property
    def postgres(self) -> bool:
        return self._postgres

    async def close(self) -> None:
        """Give back the connections kept between hot-path statements; before disposing."""
        await self._raw.close()

    # -- queues -----------------------------------------------------------------

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
        stmt = stmt.on_conflict_do_update(
            index_elements=["namespace", "queue"], set_={**changed, "updated_at": now_us}
        ).returning(*queues.columns)
        async with self._engine.begin() as conn:
            row = (await conn.execute(stmt)).one()
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


_PLAIN = QueueConfig("", "")


def _by_priority(read: Sequence[tuple[int, WorkOrder]]) -> list[WorkOrder]:
    """Leased orders, highest priority first, then oldest first."""
    return sorted((o for _, o in read), key=lambda o: (-o.spec.priority, o.created_at))


def _field_of(column: str) -> str:
    """The Queue proto field a queue_queues column belongs to (for update masks)."""
    if column.startswith("rate_"):
        return "rate_limit"
    if column.startswith("key_rate_"):
        return "rate_limit_per_key"
    return column
