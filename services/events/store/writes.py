"""Writes that run inside a caller's transaction: publish, consume, release, store state.

The single-purpose RPCs (PublishEvents, ConsumeEvents, CommitState) run one of
these in a transaction of their own; `Commit` runs several in one
transaction (store/commit.py), so they succeed or fail together.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from conveyor_events.domain.model import (
    Event,
    EventDraft,
    EventStatus,
    HandlerState,
    PublishedEvent,
    StateWrite,
    TopicRef,
)
from conveyor_events.errors import StateVersionConflict, TopicNotFound
from conveyor_events.store import queries
from conveyor_events.store.rows import event_from_row, new_event_row, state_from_row
from conveyor_events.store.tables import events, states

ev = events.c
st = states.c

#: `postgresql.insert` or `sqlite.insert` (both offer ON CONFLICT).
InsertFactory = Callable[[Any], Any]


async def publish_in(
    conn: AsyncConnection,
    insert: InsertFactory,
    topic: TopicRef,
    drafts: Sequence[EventDraft],
    now_us: int,
) -> list[PublishedEvent]:
    """Publish `drafts` to `topic`; a message id published before returns the original event.

    Advancing the topic's sequence first locks the topic row until the
    transaction ends (see store/queries.py), so the existence check below
    cannot race another publish of the same message id.
    """
    distinct: dict[str, EventDraft] = {}
    for draft in drafts:
        distinct.setdefault(draft.message_id, draft)
    bind = {"ns": topic.namespace, "topic": topic.topic}
    last = (await conn.execute(queries.ADVANCE_SEQUENCE, {**bind, "n": len(distinct)})).scalar()
    if last is None:
        raise TopicNotFound(topic)
    base = last - len(distinct)
    existing = await _published(conn, topic, list(distinct))
    new = [draft for message_id, draft in distinct.items() if message_id not in existing]
    rows = [new_event_row(topic, base + i, draft, now_us) for i, draft in enumerate(new, 1)]
    if rows:
        await _insert_events(conn, insert, topic, rows, now_us)
    if len(new) < len(distinct):
        await conn.execute(queries.SET_SEQUENCE, {**bind, "last": base + len(new)})
    return _outcomes(drafts, {row["message_id"]: event_from_row(row) for row in rows}, existing)


async def _insert_events(
    conn: AsyncConnection,
    insert: InsertFactory,
    topic: TopicRef,
    rows: list[dict[str, Any]],
    now_us: int,
) -> None:
    """Insert new event rows: on PostgreSQL one statement over arrays, not one per row.

    An executemany runs the INSERT once per row on the server; the arrays make
    a batch of 100 one statement (see queries.INSERT_EVENTS_POSTGRES).
    """
    if conn.dialect.name != "postgresql":
        await conn.execute(insert(events), rows)
        return
    await conn.execute(
        queries.INSERT_EVENTS_POSTGRES,
        {
            "ns": topic.namespace,
            "topic": topic.topic,
            "now": now_us,
            **{column: [row[column] for row in rows] for column in queries.INSERTED_COLUMNS},
        },
    )


async def _published(
    conn: AsyncConnection, topic: TopicRef, message_ids: list[str]
) -> dict[str, Event]:
    if conn.dialect.name == "postgresql":
        rows = await conn.execute(
            queries.PUBLISHED_BY_MESSAGE_ID_POSTGRES,
            {"ns": topic.namespace, "topic": topic.topic, "ids": message_ids},
        )
        return {row.message_id: event_from_row(row._mapping) for row in rows}
    result = await conn.execute(
        select(events).where(
            ev.namespace == topic.namespace,
            ev.topic == topic.topic,
            ev.message_id.in_(message_ids),
        )
    )
    return {row.message_id: event_from_row(row._mapping) for row in result}


def _outcomes(
    drafts: Sequence[EventDraft], created: dict[str, Event], existing: dict[str, Event]
) -> list[PublishedEvent]:
    """One outcome per draft: the first use of a new message id created it; others repeat."""
    out = []
    for draft in drafts:
        if draft.message_id in created:
            event = created.pop(draft.message_id)
            existing[draft.message_id] = event  # a repeat later in the batch
            out.append(PublishedEvent(event, already_published=False))
        else:
            out.append(PublishedEvent(existing[draft.message_id], already_published=True))
    return out


async def consume_in(
    conn: AsyncConnection,
    namespace: str,
    topics: Sequence[str],
    run_id: str,
    sequences: Sequence[int],
    now_us: int,
) -> int:
    """Mark the run's reservations in `topics` (only `sequences`, if any) consumed; count them."""
    stmt = (
        update(events)
        .where(
            ev.namespace == namespace,
            ev.topic.in_(list(topics)),
            ev.status == EventStatus.RESERVED.value,
            ev.reserved_by == run_id,
        )
        .values(status=EventStatus.CONSUMED.value, consumed_by=run_id, consumed_at=now_us)
        .returning(ev.sequence)
    )
    if sequences:
        stmt = stmt.where(ev.sequence.in_(list(sequences)))
    return len((await conn.execute(stmt)).all())


async def release_in(
    conn: AsyncConnection, topic: TopicRef, run_id: str, sequences: Sequence[int]
) -> int:
    """Return the run's reservations in `topic` (only `sequences`, if any) to pending."""
    stmt = (
        update(events)
        .where(
            ev.namespace == topic.namespace,
            ev.topic == topic.topic,
            ev.status == EventStatus.RESERVED.value,
            ev.reserved_by == run_id,
        )
        .values(status=EventStatus.PENDING.value, reserved_by=None, reserved_at=None)
        .returning(ev.sequence)
    )
    if sequences:
        stmt = stmt.where(ev.sequence.in_(list(sequences)))
    return len((await conn.execute(stmt)).all())


async def state_write_in(
    conn: AsyncConnection, insert: InsertFactory, write: StateWrite, now_us: int
) -> HandlerState:
    """Store `write.data` as the next version if the current one is `expected_version`.

    Version 0 means "never committed": the first state is an insert that a
    concurrent first commit makes a no-op. Later versions are a compare-and-set
    UPDATE. Either way a mismatch raises `StateVersionConflict` (ABORTED) and
    the caller's transaction rolls back.
    """
    stmt = _state_statement(insert, write, now_us)
    row = (await conn.execute(stmt)).first()
    if row is None:
        current = (await conn.execute(_version_of(write))).scalar() or 0
        raise StateVersionConflict(write.ref, write.expected_version, current)
    return state_from_row(write.ref, row._mapping)


def _state_statement(insert: InsertFactory, write: StateWrite, now_us: int) -> Any:
    """The first state is an insert (a no-op if one exists); later ones compare and set."""
    ref, data = write.ref, write.data
    values = {"data": data.data, "content_type": data.content_type, "updated_at": now_us}
    if write.expected_version == 0:
        return (
            insert(states)
            .values(namespace=ref.namespace, handler=ref.handler, version=1, **values)
            .on_conflict_do_nothing(index_elements=["namespace", "handler"])
            .returning(*states.columns)
        )
    return (
        update(states)
        .where(
            st.namespace == ref.namespace,
            st.handler == ref.handler,
            st.version == write.expected_version,
        )
        .values(version=st.version + 1, **values)
        .returning(*states.columns)
    )


def _version_of(write: StateWrite) -> Any:
    return select(st.version).where(
        st.namespace == write.ref.namespace, st.handler == write.ref.handler
    )
