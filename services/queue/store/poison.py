"""Poisoned work orders: a row a pass cannot process is failed with its cause, alone.

The sweeper's passes (expired leases, missed schedule-to-start deadlines),
redrive and FailWorkOrder read orders in batches. A row that no submit would
store today (a retry policy without its fields, an unknown state, JSON that is
not JSON: written by an older version, or by hand) must not stop the pass for
every other order. Such an order is *quarantined*: moved to FAILED with a
failure of type `poisoned` whose message is the cause and whose details name
the pass, with a history row like any other transition (so the journal and
ListWorkOrderEvents show it), and logged and counted by
`conveyor_core.poison.record_poisoned` (`conveyor.queue.poisoned_items`, label
`loop`).

The quarantine reads only plain columns (ids, names, state, attempt) and the
JSON ones as text, so it works on any row, and it leaves the row readable:
a retry policy or labels that do not decode are replaced (a policy by the
default, labels by none), their stored text kept in the failure's details
(`stored_retry_policy`, `stored_labels`). GetWorkOrder then shows the order
FAILED with its cause, and listing its queue never trips on it.

Batches stay batched: a pass whose batch transaction fails (the database
refused one row's writes) runs again one order per transaction
(`isolated_pass`), to find the order that did.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Text, cast, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from conveyor_core.poison import describe, is_transient, record_poisoned
from conveyor_queue.domain.model import RetryPolicy, WorkOrder, WorkOrderState
from conveyor_queue.store.rows import order_from_row, policy_from_json, policy_to_json
from conveyor_queue.store.tables import work_order_events, work_orders

log = logging.getLogger(__name__)
wo = work_orders.c
#: Failure type of a quarantined order.
POISONED_FAILURE_TYPE = "poisoned"
#: The columns a quarantine reads: plain values that always decode.
PLAIN_COLUMNS = (
    wo.seq,
    wo.id,
    wo.namespace,
    wo.queue,
    wo.state,
    wo.attempt,
    wo.correlation_id,
    wo.traceparent,
    cast(wo.retry_policy, Text).label("retry_policy_text"),
    cast(wo.labels, Text).label("labels_text"),
)
NOT_TERMINAL = frozenset(s for s in WorkOrderState if not s.terminal)
#: Longest stored text of an undecodable column kept in a quarantined order's failure.
MAX_KEPT_TEXT = 1000


@dataclass
class Poisoned:
    """Orders one pass quarantined, reported (logged, counted) once their transaction committed."""

    loop: str
    found: list[tuple[str, BaseException]] = field(default_factory=list)

    def add(self, order_id: object, error: BaseException) -> None:
        self.found.append((f"work order {order_id}", error))

    def report(self) -> None:
        for item, error in self.found:
            record_poisoned("queue", self.loop, item, error, "failed")
        self.found.clear()


def poisoned_failure(loop: str, error: BaseException) -> dict[str, Any]:
    """The stored failure of a quarantined order (the JSON of a domain Failure)."""
    return {
        "type": POISONED_FAILURE_TYPE,
        "message": f"the order could not be processed ({describe(error)})",
        "retryable": False,
        "details": {"loop": loop},
    }


async def decoded_orders(
    conn: AsyncConnection,
    seqs: Sequence[int],
    poisoned: Poisoned,
    now_us: int,
    states: Collection[WorkOrderState] = NOT_TERMINAL,
) -> list[tuple[Any, WorkOrder]]:
    """The rows of `seqs` (already locked by the caller), each with its order, in seq order;
    a row that cannot be fetched or read as an order is quarantined instead."""
    if not seqs:
        return []
    result = await conn.execute(select(work_orders).where(wo.seq.in_(seqs)).order_by(wo.seq))
    decoded: list[tuple[Any, WorkOrder]] = []
    unreadable: list[tuple[int, BaseException]] = []
    fetch_errors: list[BaseException] = []
    while True:
        try:
            row = result.fetchone()
        except Exception as error:  # a column that does not decode (SQLite JSON text)
            fetch_errors.append(error)
            continue
        if row is None:
            break
        try:
            decoded.append((row, order_from_row(row._mapping)))
        except Exception as error:
            unreadable.append((row.seq, error))
    seen = {row.seq for row, _ in decoded} | {seq for seq, _ in unreadable}
    # Rows come in seq order: the n-th fetch error is the n-th row that did not come.
    unreadable += zip([seq for seq in sorted(seqs) if seq not in seen], fetch_errors, strict=False)
    for seq, cause in unreadable:
        await quarantine(conn, seq, poisoned, cause, now_us, states)
    return decoded


async def quarantine(
    conn: AsyncConnection,
    seq: int,
    poisoned: Poisoned,
    error: BaseException,
    now_us: int,
    states: Collection[WorkOrderState] = NOT_TERMINAL,
) -> bool:
    """Fail order `seq` with a `poisoned` failure if it is in one of `states`; True if it was."""
    row = (await conn.execute(select(*PLAIN_COLUMNS).where(wo.seq == seq))).first()
    if row is None or row.state not in {s.value for s in states}:
        return False
    failure = poisoned_failure(poisoned.loop, error)
    values: dict[str, Any] = {
        "state": WorkOrderState.FAILED.value,
        "lease_token": None,
        "lease_expires_at": None,
        "completed_at": now_us,
        "updated_at": now_us,
        "failure": failure,
        "timeout_kind": None,
    }
    if not _decodes(row.retry_policy_text, lambda data: policy_from_json(data)):
        values["retry_policy"] = policy_to_json(RetryPolicy())
        failure["details"]["stored_retry_policy"] = _kept(row.retry_policy_text)
    if not _decodes(row.labels_text, _string_map):
        values["labels"] = {}
        failure["details"]["stored_labels"] = _kept(row.labels_text)
    await conn.execute(
        update(work_orders).where(wo.seq == seq, wo.state == row.state).values(**values)
    )
    await conn.execute(
        insert(work_order_events),
        [
            {
                "work_order_id": row.id,
                "namespace": row.namespace,
                "queue": row.queue,
                "from_state": row.state if row.state in WorkOrderState.__members__ else None,
                "to_state": WorkOrderState.FAILED.value,
                "at": now_us,
                "attempt": row.attempt,
                "reason": f"quarantined by the {poisoned.loop}: {failure['message']}",
                "actor": poisoned.loop,
                "timeout_kind": None,
                "failure": failure,
                "correlation_id": row.correlation_id,
                "traceparent": row.traceparent,
            }
        ],
    )
    poisoned.add(row.id, error)
    return True


def _decodes(stored: str | None, read: Callable[[Any], object]) -> bool:
    try:
        read(json.loads(stored or ""))
    except Exception:
        return False
    return True


def _string_map(data: Any) -> None:
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise ValueError("not a map of strings")


def _kept(stored: str | None) -> str:
    text = stored or ""
    return text if len(text) <= MAX_KEPT_TEXT else text[: MAX_KEPT_TEXT - 3] + "..."


#: One pass over a connection: `only` restricts it to one order (by seq); None is the batch.
PassBody = Callable[[AsyncConnection, "int | None", Poisoned], Awaitable[list[WorkOrder]]]


async def isolated_pass(
    engine: AsyncEngine,
    poisoned: Poisoned,
    body: PassBody,
    candidates: Callable[[AsyncConnection], Awaitable[list[int]]],
    now_us: int,
) -> list[WorkOrder]:
    """Run `body` over the batch in one transaction; should that fail for a reason that is
    not transient, run it once per candidate order instead, quarantining each order whose
    own transaction fails. Reports the quarantined orders after their commit."""
    try:
        async with engine.begin() as conn:
            changed = await body(conn, None, poisoned)
    except Exception as error:
        if is_transient(error):
            raise
        poisoned.found.clear()  # rolled back with the batch
        log.warning(
            "queue %s: batch failed (%s); processing order by order", poisoned.loop, describe(error)
        )
        changed = await _one_by_one(engine, poisoned, body, candidates, now_us)
    poisoned.report()
    return changed


async def _one_by_one(
    engine: AsyncEngine,
    poisoned: Poisoned,
    body: PassBody,
    candidates: Callable[[AsyncConnection], Awaitable[list[int]]],
    now_us: int,
) -> list[WorkOrder]:
    async with engine.connect() as conn:
        seqs = await candidates(conn)
    changed: list[WorkOrder] = []
    for seq in seqs:
        reported = len(poisoned.found)
        try:
            async with engine.begin() as conn:
                changed += await body(conn, seq, poisoned)
            continue
        except Exception as error:
            if is_transient(error):
                raise
            del poisoned.found[reported:]  # rolled back
            cause = error
        try:
            async with engine.begin() as conn:
                await quarantine(conn, seq, poisoned, cause, now_us)
        except Exception as error:
            if is_transient(error):
                raise
            log.error(
                "queue %s: order seq %d could not be processed (%s) nor quarantined (%s)",
                poisoned.loop,
                seq,
                describe(cause),
                describe(error),
            )
    return changed
