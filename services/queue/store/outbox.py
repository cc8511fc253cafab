"""The queue's outbox: its order history, journaled by `conveyor_core.outbox.OutboxRelay`.

Every state change already writes one `queue_work_order_events` row in the
same transaction as the change (store/history.py), so that table is the
outbox; no second table is written on the hot path. Delivery is tracked by
`journaled_at` (NULL until delivered) with a partial index over the
undelivered rows. The relay sets it once per batch, in one UPDATE, off the
hot path: a submit, lease or completion costs one more (small, partial) index
entry and nothing else. A cursor ("delivered up to seq N") would cost even
less but is wrong here: `seq` is allocated at insert and rows commit out of
`seq` order, so a cursor would skip rows that commit late.

Journal records (see docs/events.md for the full list):

* id `queue/<seq>`: deterministic, so a re-delivery is a no-op;
* type `queue.work_order.<what happened>` (`record_type`);
* subjects `{"work_order": <id>, "queue": <queue>}`;
* the order's correlation id and the trace id of its submit's traceparent;
* attributes: from_state, to_state, attempt, reason, and when present actor,
  timeout_kind, failure_type, failure_retryable.

Claims: on PostgreSQL `FOR UPDATE SKIP LOCKED` inside a transaction held
during the append, so relays on several replicas take disjoint rows; and a
batch never delivers an order's record while an earlier record of the same
order is undelivered outside the batch (held by another relay), so each
order's records reach the journal in order. SQLite has a single writer and one
process: the claim is a plain read, the mark a second short transaction, so
the queue's only connection is not held during the append.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, Select, Uuid, any_, bindparam, func, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from conveyor_core.clock import Clock, SystemClock, from_micros, to_micros
from conveyor_core.outbox import OutboxBatch, OutboxNotifier, OutboxRecord, trace_id_of
from conveyor_core.outbox_table import (
    CTID,
    ClaimedBatch,
    fetch_each,
    mark_by_ctid,
    mark_by_ctid_statement,
    records_of,
)
from conveyor_queue.domain.model import (
    CompletedWorkOrder,
    LeasedWorkOrder,
    QueueConfig,
    QueueRef,
    Redrive,
    TimeoutKind,
    WorkOrder,
    WorkOrderEvent,
    WorkOrderRef,
    WorkOrderState,
)
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
    WorkOrderStore,
)
from conveyor_queue.store.tables import work_order_events

#: Coordination channel the queue notifies when history rows were written.
OUTBOX_CHANNEL = "outbox:queue"
RECORD_TYPE_PREFIX = "queue.work_order."
#: Longest attribute value sent (well inside the event store's default limit).
MAX_ATTRIBUTE_LENGTH = 256

ev = work_order_events.c
S = WorkOrderState


def claim_statement(limit: int, postgres: bool) -> Select[Any]:
    """The oldest undelivered rows (partial index); locked and skipped-if-locked on PostgreSQL."""
    statement = select(work_order_events).where(ev.journaled_at.is_(None))
    statement = statement.order_by(ev.seq).limit(limit)
    if postgres:  # each row's ctid too: the mark updates the locked tuples by it
        return statement.add_columns(CTID).with_for_update(skip_locked=True)
    return statement


#: Undelivered rows of some orders up to a seq: finds rows held by another relay (PostgreSQL).
UNDELIVERED_OF_ORDERS = (
    select(ev.work_order_id, ev.seq)
    .where(
        ev.work_order_id == any_(bindparam("order_ids", type_=ARRAY(Uuid))),
        ev.seq <= bindparam("up_to_seq"),
        ev.journaled_at.is_(None),
    )
    .order_by(ev.seq)
)

#: Mark rows delivered by seq (PostgreSQL: only rows the claim could not fetch; one array
#: parameter keeps the statement cacheable).
MARK_DELIVERED_POSTGRES = (
    update(work_order_events)
    .where(ev.seq == any_(bindparam("seqs", type_=ARRAY(BigInteger))))
    .values(journaled_at=bindparam("now"))
)
#: Mark a fetched row delivered by its ctid (a TID scan: as `seq = ANY(...)` the planner,
#: without statistics, read the whole history for every batch).
MARK_BY_CTID = mark_by_ctid_statement(work_order_events.name, ev.journaled_at.name)


def record_type(from_state: S | None, to_state: S, timeout_kind: str | None) -> str:
    """The journal type of one transition, e.g. "queue.work_order.leased"."""
    if from_state is None:
        what = "queued"
    elif to_state is S.QUEUED:
        what = {S.DEAD: "redriven", S.LEASED: "retry_scheduled"}.get(from_state, "queued")
        if from_state is S.LEASED and timeout_kind:
            what = "lease_expired"
    elif to_state is S.LEASED:
        what = "cancel_requested" if from_state is S.LEASED else "leased"
    else:
        what = to_state.value.lower()  # succeeded, failed, dead, cancelled
    return RECORD_TYPE_PREFIX + what


def journal_record(row: Mapping[str, Any]) -> OutboxRecord:
    """The journal record of one history row."""
    from_state = S(row["from_state"]) if row["from_state"] else None
    to_state = S(row["to_state"])
    attributes = {
        "from_state": from_state.value if from_state else "",
        "to_state": to_state.value,
        "attempt": str(row["attempt"]),
        "reason": row["reason"][:MAX_ATTRIBUTE_LENGTH],
    }
    if row["actor"]:
        attributes["actor"] = row["actor"][:MAX_ATTRIBUTE_LENGTH]
    if row["timeout_kind"]:
        attributes["timeout_kind"] = TimeoutKind(row["timeout_kind"]).value
    failure = row["failure"]
    if failure:
        attributes["failure_type"] = str(failure.get("type", ""))[:MAX_ATTRIBUTE_LENGTH]
        attributes["failure_retryable"] = str(bool(failure.get("retryable", True))).lower()
    return OutboxRecord(
        id=f"queue/{row['seq']}",
        type=record_type(from_state, to_state, row["timeout_kind"]),
        namespace=row["namespace"],
        time=from_micros(row["at"]),
        subjects={"work_order": str(row["work_order_id"]), "queue": row["queue"]},
        correlation_id=row["correlation_id"],
        trace_id=trace_id_of(row["traceparent"]),
        attributes=attributes,
    )


def in_order(rows: Sequence[Any], undelivered: Sequence[tuple[uuid.UUID, int]]) -> list[Any]:
    """The claimed rows that may go now: none after an order's record held elsewhere.

    Args:
        rows: claimed rows, in seq order.
        undelivered: (work_order_id, seq) of every undelivered row of the same
            orders up to the last claimed seq, in seq order.
    """
    claimed = {row.seq for row in rows}
    held_from: dict[uuid.UUID, int] = {}
    for order_id, seq in undelivered:
        if seq not in claimed and order_id not in held_from:
            held_from[order_id] = seq
    return [row for row in rows if row.seq < held_from.get(row.work_order_id, math.inf)]


class SqlQueueOutbox:
    """OutboxSource over `queue_work_order_events` (PostgreSQL or SQLite)."""

    channel = OUTBOX_CHANNEL

    def __init__(self, engine: AsyncEngine, clock: Clock | None = None) -> None:
        self._engine = engine
        self._postgres = engine.dialect.name == "postgresql"
        self._clock = clock or SystemClock()

    def claim(self, limit: int) -> AbstractAsyncContextManager[OutboxBatch]:
        return self._claim_locked(limit) if self._postgres else self._claim_single_writer(limit)

    async def purge_delivered(self, older_than_seconds: float, limit: int) -> int:
        """Nothing: these rows are the orders' history (GetWorkOrder shows it), kept with
        the orders, not a copy of the journal's."""
        return 0

    @asynccontextmanager
    async def _claim_locked(self, limit: int) -> AsyncIterator[OutboxBatch]:
        async with self._engine.begin() as conn:  # row locks held until the batch is done
            rows, unreadable = await self._claimed_rows(conn, limit)
            claimed = len(rows) + len(unreadable)
            if rows:
                undelivered = await conn.execute(
                    UNDELIVERED_OF_ORDERS,
                    {
                        "order_ids": list({row.work_order_id for row in rows}),
                        "up_to_seq": rows[-1].seq,
                    },
                )
                rows = in_order(rows, [(r.work_order_id, r.seq) for r in undelivered])
            ctids = [row.ctid for row in rows]
            seqs = [seq for seq, _ in unreadable]
            yield self._batch(rows, claimed, lambda: self._mark(conn, seqs, ctids), unreadable)

    @asynccontextmanager
    async def _claim_single_writer(self, limit: int) -> AsyncIterator[OutboxBatch]:
        async with self._engine.connect() as conn:
            rows, unreadable = await self._claimed_rows(conn, limit)
        seqs = [row.seq for row in rows] + [seq for seq, _ in unreadable]

        async def mark() -> None:
            async with self._engine.begin() as conn:
                await self._mark(conn, seqs)

        yield self._batch(rows, len(seqs), mark, unreadable)

    async def _claimed_rows(
        self, conn: AsyncConnection, limit: int
    ) -> tuple[list[Any], list[tuple[int, BaseException]]]:
        """The claimed rows that could be fetched, and the seq and error of those that could
        not (a column that does not decode): one bad row never stops the relay."""
        statement = claim_statement(limit, self._postgres)
        rows, errors = fetch_each(await conn.execute(statement))
        if not errors:
            return rows, []
        fetched = {row.seq for row in rows}
        every = (await conn.execute(statement.with_only_columns(ev.seq))).scalars()
        missing = [seq for seq in every if seq not in fetched]
        return rows, list(zip(missing, errors, strict=False))

    def _batch(
        self,
        rows: Sequence[Any],
        claimed: int,
        mark: Callable[[], Awaitable[None]],
        unfetched: Sequence[tuple[int, BaseException]] = (),
    ) -> ClaimedBatch:
        records, unreadable = records_of(
            rows, lambda row: journal_record(row._mapping), work_order_events.name
        )
        unreadable += [(f"{work_order_events.name} row {seq}", e) for seq, e in unfetched]
        return ClaimedBatch(records, claimed, mark, unreadable)

    async def _mark(
        self, conn: AsyncConnection, seqs: Sequence[int], ctids: Sequence[Any] = ()
    ) -> None:
        now_us = to_micros(self._clock.now())
        await mark_by_ctid(conn, MARK_BY_CTID, ctids, now_us)
        if not seqs:
            return
        if self._postgres:
            await conn.execute(MARK_DELIVERED_POSTGRES, {"seqs": list(seqs), "now": now_us})
        else:
            await conn.execute(
                update(work_order_events).where(ev.seq.in_(seqs)).values(journaled_at=now_us)
            )

    async def undelivered_count(self) -> int:
        """Rows not yet journaled (the relay's backlog)."""
        async with self._engine.connect() as conn:
            result = await conn.execute(
                select(func.count()).select_from(work_order_events).where(ev.journaled_at.is_(None))
            )
            return int(result.scalar_one())


class NotifyingWorkOrderStore:
    """A WorkOrderStore that pokes the outbox notifier after calls that wrote history rows.

    A wrapper implementing the same Protocol, so neither the engine nor the SQL
    store knows about the relay. Reads and other calls pass straight through, each
    written out so that mypy checks the wrapper against the Protocol.
    """

    def __init__(self, inner: WorkOrderStore, notifier: OutboxNotifier) -> None:
        self._inner = inner
        self._notifier = notifier

    # -- calls that may write history rows: poke the notifier -------------------

    async def work_order_insert_many(
        self, orders: Sequence[NewWorkOrder], now: datetime
    ) -> list[SubmitResult]:
        results = await self._inner.work_order_insert_many(orders, now)
        self._poke(any(not r.already_exists for r in results))
        return results

    async def work_order_lease_available(
        self, params: LeaseParams, gate: TokenGate
    ) -> list[LeasedWorkOrder]:
        leased = await self._inner.work_order_lease_available(params, gate)
        self._poke(bool(leased))
        return leased

    async def work_order_complete_many(
        self, items: Sequence[CompleteParams], now: datetime, brief: bool = False
    ) -> list[WorkOrder | CompletedWorkOrder | Exception]:
        results = await self._inner.work_order_complete_many(items, now, brief)
        self._poke(any(not isinstance(r, Exception) for r in results))
        return results

    async def work_order_fail(self, params: FailParams) -> WorkOrder:
        order = await self._inner.work_order_fail(params)
        self._poke()
        return order

    async def work_order_cancel(self, params: CancelParams) -> WorkOrder:
        order = await self._inner.work_order_cancel(params)
        self._poke()
        return order

    async def work_order_expire_leases(self, now: datetime, limit: int) -> list[WorkOrder]:
        changed = await self._inner.work_order_expire_leases(now, limit)
        self._poke(bool(changed))
        return changed

    async def work_order_expire_deadlines(self, now: datetime, limit: int) -> list[WorkOrder]:
        changed = await self._inner.work_order_expire_deadlines(now, limit)
        self._poke(bool(changed))
        return changed

    async def redrive_run(self, params: RedriveParams) -> Redrive:
        redrive = await self._inner.redrive_run(params)
        self._poke()
        return redrive

    # -- calls that write no history: straight through ---------------------------

    async def work_order_heartbeat(self, params: HeartbeatParams) -> WorkOrder:
        return await self._inner.work_order_heartbeat(params)

    async def work_order_get(self, ref: WorkOrderRef) -> WorkOrder:
        return await self._inner.work_order_get(ref)

    async def work_order_list(self, params: ListParams) -> list[tuple[int, WorkOrder]]:
        return await self._inner.work_order_list(params)

    async def work_order_events_list(
        self, ref: WorkOrderRef, after_seq: int, limit: int
    ) -> list[WorkOrderEvent]:
        return await self._inner.work_order_events_list(ref, after_seq, limit)

    async def work_order_count_ahead(self, order: WorkOrder, now: datetime) -> int:
        return await self._inner.work_order_count_ahead(order, now)

    async def work_order_next_available(
        self, namespace: str, queues: Sequence[str], now: datetime
    ) -> datetime | None:
        return await self._inner.work_order_next_available(namespace, queues, now)

    async def work_order_wait_samples(
        self, queue: QueueRef, since: datetime, limit: int
    ) -> list[timedelta]:
        return await self._inner.work_order_wait_samples(queue, since, limit)

    async def queue_get(self, ref: QueueRef) -> QueueConfig:
        return await self._inner.queue_get(ref)

    async def queue_get_cached(self, ref: QueueRef) -> QueueConfig:
        return await self._inner.queue_get_cached(ref)

    async def queue_upsert(
        self, config: QueueConfig, fields: frozenset[str], now: datetime
    ) -> QueueConfig:
        return await self._inner.queue_upsert(config, fields, now)

    async def queue_list(self, namespace: str, after: str, limit: int) -> list[QueueConfig]:
        return await self._inner.queue_list(namespace, after, limit)

    async def queue_depth(self, ref: QueueRef) -> QueueDepth:
        return await self._inner.queue_depth(ref)

    async def redrive_list(self, ref: QueueRef, offset: int, limit: int) -> list[Redrive]:
        return await self._inner.redrive_list(ref, offset, limit)

    async def close(self) -> None:
        await self._inner.close()

    def _poke(self, wrote: bool = True) -> None:
        if wrote:
            self._notifier.poke()
