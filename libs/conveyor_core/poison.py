"""Poisoned items: one bad row must never stop a background pass for everyone else.

Every background pass (the scheduler's firing tick, the queue's lease sweeper
and redrive, the outbox relays) works through many items at once, in batches.
When one item cannot be processed (a row no validation would accept today,
written by an older version or by hand, or a value a computation cannot
handle), the pass isolates it: `record_poisoned` logs one ERROR line naming
the item and the cause and counts it in `conveyor.<service>.poisoned_items`
(label `loop`, a small fixed set per service); the caller then quarantines the
item (fails the order, pauses the schedule, skips the outbox row) and goes on
with the rest.

Batch paths stay batched: a pass falls back to item-by-item processing only
when a whole batch failed, to find the item that did.
"""

from __future__ import annotations

import asyncio
import logging
from functools import cache

import asyncpg
from opentelemetry.metrics import Counter
from sqlalchemy import exc

from conveyor_core.db import is_unavailable
from conveyor_core.metrics import meter

log = logging.getLogger(__name__)
_meter = meter(__name__)
#: Longest error text kept in a quarantine reason (logged in full).
MAX_REASON_LENGTH = 500


@cache
def _counter(service: str) -> Counter:
    return _meter.create_counter(
        f"conveyor.{service}.poisoned_items",
        description="Items a background pass could not process and quarantined (label: loop).",
    )


def is_transient(error: BaseException) -> bool:
    """Whether `error` says "try again later" (the database out of reach, locked, a deadlock or
    serialization failure, a timeout) rather than "this item is bad": transient errors never
    quarantine anything, however often they happen."""
    if isinstance(error, (asyncio.CancelledError, TimeoutError)) or is_unavailable(error):
        return True
    if isinstance(error, exc.OperationalError):  # SQLite "database is locked", ...
        return True
    current: BaseException | None = error
    for _ in range(8):
        if current is None:
            break
        if isinstance(
            current,
            (asyncpg.exceptions.TransactionRollbackError, asyncpg.exceptions.LockNotAvailableError),
        ):
            return True
        current = getattr(current, "orig", None) or current.__cause__
    return False


def describe(error: BaseException) -> str:
    """`Type: message`, cut to MAX_REASON_LENGTH: the reason stored with a quarantined item."""
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= MAX_REASON_LENGTH else text[: MAX_REASON_LENGTH - 3] + "..."


def record_poisoned(service: str, loop: str, item: str, error: BaseException, action: str) -> None:
    """Log (ERROR, with the cause) and count one poisoned item.

    Args:
        service: "queue", "scheduler", ... (the metric's name).
        loop: which pass found it ("fire_tick", "lease_sweeper", "outbox", ...).
        item: what it is, for a human ("work order 1f2e...", "schedule ns/job/s").
        error: why it failed.
        action: what was done with it ("failed", "paused", "skipped").
    """
    _counter(service).add(1, {"loop": loop})
    log.error(
        "%s %s: poisoned item %s %s (%s)",
        service,
        loop,
        item,
        action,
        describe(error),
    )
    log.debug("%s %s: traceback of poisoned item %s", service, loop, item, exc_info=error)
