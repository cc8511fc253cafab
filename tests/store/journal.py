"""Read the executor's journal drafts that landed in its outbox, without delivering them."""

from __future__ import annotations

from conveyor_executor.store.outbox import SqlExecutorOutbox


async def journal_types(outbox: SqlExecutorOutbox, namespace: str) -> list[str]:
    """The types of the undelivered records of `namespace`, oldest first.

    A claim never marked leaves the rows undelivered, so every read sees them all."""
    async with outbox.claim(100_000) as batch:
        return [r.type for r in batch.records if r.namespace == namespace]
