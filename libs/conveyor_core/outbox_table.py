"""An outbox source over a plain table of journal rows (the scheduler's and executor's).

The table has an auto-increment `seq` primary key and a nullable "delivered at"
column (micros). Rows are delivered with ids `<service>/<seq>`, deterministic,
so a re-delivery is a no-op at the journal. On PostgreSQL a claim locks its rows
(`FOR UPDATE SKIP LOCKED`) for the length of the append, so relays on several
replicas (or an old and a new scheduler leader) take disjoint rows; SQLite has
one writer: a plain read, then a short transaction to mark the rows.

Marking on PostgreSQL updates each claimed row by its ctid (the claim holds the row
locks, so the tuples cannot move): a TID scan, one tuple each. As `seq IN (...)`
over a table without statistics the planner chose a sequential scan of every row
ever written (delivered rows stay until purged), so the mark's cost grew with the table
(docs/benchmarks.md, "Round 3").

The queue's outbox is not one of these: it relays its order history with an
ordering guard per order (conveyor_queue.store.outbox).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnClause,
    Table,
    TextClause,
    bindparam,
    delete,
    func,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from conveyor_core.clock import Clock, SystemClock, to_micros
from conveyor_core.outbox import OutboxBatch, OutboxRecord

#: The ctid of each claimed row (PostgreSQL), selected with it for `mark_by_ctid`.
CTID: ColumnClause[Any] = literal_column("ctid")


def mark_by_ctid_statement(table: str, column: str) -> TextClause:
    """`UPDATE <table> SET <column> = :now WHERE ctid = :ctid`, executed once per row."""
    return text(f"UPDATE {table} SET {column} = :now WHERE ctid = CAST(:ctid AS tid)").bindparams(
        bindparam("now"), bindparam("ctid")
    )


async def mark_by_ctid(
    conn: AsyncConnection, statement: TextClause, ctids: Sequence[Any], now_us: int
) -> None:
    """Mark locked rows delivered by their ctids (one TID scan each, in one round trip)."""
    if ctids:
        await conn.execute(statement, [{"now": now_us, "ctid": ctid} for ctid in ctids])


@dataclass(frozen=True, slots=True)
class ClaimedBatch:
    """An OutboxBatch whose marking is a callable (the claim decides how to mark)."""

    records: Sequence[OutboxRecord]
    claimed: int
    _mark: Callable[[], Awaitable[None]]
    unreadable: Sequence[tuple[str, BaseException]] = ()

    async def mark_delivered(self) -> None:
        await self._mark()


def fetch_each(result: Any) -> tuple[list[Any], list[BaseException]]:
    """The rows of `result` that could be fetched, and why the others could not (a column
    that does not decode, as SQLite's JSON text may not): one bad row costs only itself."""
    rows: list[Any] = []
    errors: list[BaseException] = []
    while True:
        try:
            row = result.fetchone()
        except Exception as error:
            errors.append(error)
            continue
        if row is None:
            return rows, errors
        rows.append(row)


def records_of(
    rows: Sequence[Any], record_of: Callable[[Any], OutboxRecord], what: str
) -> tuple[list[OutboxRecord], list[tuple[str, BaseException]]]:
    """Each row's record; a row whose record cannot be built is named (`what` row <seq>)
    among the unreadable, with why."""
    records: list[OutboxRecord] = []
    unreadable: list[tuple[str, BaseException]] = []
    for row in rows:
        try:
            records.append(record_of(row))
        except Exception as error:
            unreadable.append((f"{what} row {row.seq}", error))
    return records, unreadable


@dataclass(frozen=True, slots=True)
class _Claimed:
    seqs: list[int]  # every claimed row
    ctids: list[Any]  # of the rows fetched (PostgreSQL)
    unfetched: list[int]  # seqs of the rows that could not be fetched
    batch: ClaimedBatch


class TableOutbox:
    """OutboxSource over `table`: undelivered rows oldest first, marked in `delivered_column`.

    Args:
        engine: the service's engine.
        table: the outbox table (`seq` primary key).
        delivered_column: the nullable column set (micros) when a row was delivered.
        record_of: turns a row into the record to append.
        channel: coordination channel notified when rows are written.
        clock: time of the marks.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        table: Table,
        *,
        delivered_column: str,
        record_of: Callable[[Any], OutboxRecord],
        channel: str,
        clock: Clock | None = None,
    ) -> None:
        self.channel = channel
        self._engine = engine
        self._table = table
        self._seq = table.c.seq
        self._delivered = table.c[delivered_column]
        self._record_of = record_of
        self._postgres = engine.dialect.name == "postgresql"
        self._clock = clock or SystemClock()
        self._mark_by_ctid = mark_by_ctid_statement(table.name, self._delivered.name)

    def claim(self, limit: int) -> AbstractAsyncContextManager[OutboxBatch]:
        return self._claim(limit)

    @asynccontextmanager
    async def _claim(self, limit: int) -> AsyncIterator[OutboxBatch]:
        if self._postgres:
            async with self._engine.begin() as conn:  # row locks held until the batch is done
                claimed = await self._read(conn, limit, lambda: self._mark_locked(conn, claimed))
                yield claimed.batch
            return
        async with self._engine.connect() as conn:
            claimed = await self._read(conn, limit, lambda: mark())

        async def mark() -> None:
            async with self._engine.begin() as conn:
                await self._mark(conn, claimed.seqs)

        yield claimed.batch

    async def _read(
        self, conn: AsyncConnection, limit: int, mark: Callable[[], Awaitable[None]]
    ) -> _Claimed:
        """The claimed rows (every row, readable or not) and the batch of their records."""
        statement = select(self._table).where(self._delivered.is_(None))
        statement = statement.order_by(self._seq).limit(limit)
        if self._postgres:
            statement = statement.add_columns(CTID).with_for_update(skip_locked=True)
        rows, fetch_errors = fetch_each(await conn.execute(statement))
        records, unreadable = records_of(rows, self._record_of, self._table.name)
        seqs = [row.seq for row in rows]
        ctids = [row.ctid for row in rows] if self._postgres else []
        unfetched: list[int] = []
        if fetch_errors:  # which rows did not come: their seqs, read alone
            again = (await conn.execute(statement.with_only_columns(self._seq))).scalars()
            # The same first rows, oldest first (a row written since comes after them).
            all_seqs = list(again)[: len(rows) + len(fetch_errors)]
            unfetched = [seq for seq in all_seqs if seq not in set(seqs)]
            unreadable += [
                (f"{self._table.name} row {seq}", error)
                for seq, error in zip(unfetched, fetch_errors, strict=False)
            ]
            seqs = all_seqs
        return _Claimed(seqs, ctids, unfetched, ClaimedBatch(records, len(seqs), mark, unreadable))

    async def _mark_locked(self, conn: AsyncConnection, claimed: _Claimed) -> None:
        """PostgreSQL: the fetched rows by their ctids, the rows that would not fetch by seq."""
        await mark_by_ctid(conn, self._mark_by_ctid, claimed.ctids, to_micros(self._clock.now()))
        await self._mark(conn, claimed.unfetched)

    async def _mark(self, conn: AsyncConnection, seqs: Sequence[int]) -> None:
        if seqs:
            await conn.execute(
                update(self._table)
                .where(self._seq.in_(list(seqs)))
                .values({self._delivered.key: to_micros(self._clock.now())})
            )

    async def purge_delivered(self, older_than_seconds: float, limit: int) -> int:
        """Delete up to `limit` of the oldest rows delivered over `older_than_seconds` ago.

        The rows are found in `seq` order (the primary key: delivery goes oldest first, so
        the first rows it meets qualify), on PostgreSQL skipping rows another purge has
        locked."""
        before_us = to_micros(self._clock.now()) - round(older_than_seconds * 1_000_000)
        doomed = (
            select(self._seq)
            .where(self._delivered.is_not(None), self._delivered < before_us)
            .order_by(self._seq)
            .limit(limit)
        )
        if self._postgres:
            doomed = doomed.with_for_update(skip_locked=True)
        async with self._engine.begin() as conn:
            result = await conn.execute(delete(self._table).where(self._seq.in_(doomed)))
        return int(result.rowcount or 0)

    async def undelivered_count(self) -> int:
        async with self._engine.connect() as conn:
            statement = select(func.count()).select_from(self._table)
            result = await conn.execute(statement.where(self._delivered.is_(None)))
            return int(result.scalar_one())
