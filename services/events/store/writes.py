"""Writes that run inside a caller's transaction: publish, consume, release, store state.

The single-purpose RPCs (PublishEvents, ConsumeEvents, CommitState) run one of
these in a transaction of their own; `Commit` runs several in one
transaction (store/commit.py), so they succeed or fail together. The one
exception is `publish_new_postgres`, PublishEvents' first try on PostgreSQL: a
single statement that is a transaction by itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from conveyor_core.clock import from_micros
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


def distinct_drafts(drafts: Sequence[EventDraft]) -> list[EventDraft]:
    """The first draft of each message id, in batch order (a repeat refers to the first)."""
    distinct: dict[str, EventDraft] = {}
    for draft in drafts:
        distinct.setdefault(draft.message_id, draft)
    return list(distinct.values())


async def publish_new_postgres(
    conn: AsyncConnection, topic: TopicRef, drafts: Sequence[EventDraft], now_us: int
) -> list[PublishedEvent]:
    """Publish `drafts` assuming no message id was published before: one statement, no lookup.

    Run outside an explicit transaction, the statement is its own: one round
    trip to PostgreSQL. If a message id is already published (before, or by a
    concurrent publish that won the topic lock), the unique index refuses the
    insert, nothing is stored, and `IntegrityError` propagates: the caller
    then publishes with `publish_in`, which looks the ids up.
    """
    distinct = distinct_drafts(drafts)
    bind = _draft_arrays(topic, distinct, now_us)
    base = (await conn.execute(queries.PUBLISH_NEW_POSTGRES, {**bind, "n": len(distinct)})).scalar()
    if base is None:
        raise TopicNotFound(topic)
    return _outcomes(topic, drafts, base, {}, now_us)


async def publish_in(
    conn: AsyncConnection,
    insert: InsertFactory,
    topic: TopicRef,
    drafts: Sequence[EventDraft],
    now_us: int,
) -> list[PublishedEvent]:
    """Publish `drafts` to `topic`; a message id published before returns the original event.

    The topic row is locked first (see store/queries.py), so the look-up of
    message ids that follows cannot race another publish of the same id.
    """
    distinct = distinct_drafts(drafts)
    if conn.dialect.name == "postgresql":
        base, existing = await _publish_postgres(conn, topic, distinct, now_us)
    else:
        base, existing = await _publish_sqlite(conn, insert, topic, distinct, now_us)
    return _outcomes(topic, drafts, base, existing, now_us)


async def _publish_postgres(
    conn: AsyncConnection, topic: TopicRef, distinct: list[EventDraft], now_us: int
) -> tuple[int, dict[str, Event]]:
    """Lock the topic, then look up, insert the new drafts and advance, in one statement."""
    bind = {"ns": topic.namespace, "topic": topic.topic}
    if (await conn.execute(queries.LOCK_TOPIC_POSTGRES, bind)).first() is None:
        raise TopicNotFound(topic)
    bind = _draft_arrays(topic, distinct, now_us)
    rows = (await conn.execute(queries.PUBLISH_POSTGRES, bind)).all()
    existing = {
        row.message_id: event_from_row(row._mapping) for row in rows if row.sequence is not None
    }
    return rows[0].base, existing


async def _publish_sqlite(
    conn: AsyncConnection,
    insert: InsertFactory,
    topic: TopicRef,
    distinct: list[EventDraft],
    now_us: int,
) -> tuple[int, dict[str, Event]]:
    """Advance the sequence first (SQLite's write lock), look up, insert, hand back the unused."""
    bind = {"ns": topic.namespace, "topic": topic.topic}
    last = (await conn.execute(queries.ADVANCE_SEQUENCE, {**bind, "n": len(distinct)})).scalar()
    if last is None:
        raise TopicNotFound(topic)
    base = last - len(distinct)
    result = await conn.execute(
        select(events).where(
            ev.namespace == topic.namespace,
            ev.topic == topic.topic,
            ev.message_id.in_([d.message_id for d in distinct]),
        )
    )
    existing = {row.message_id: event_from_row(row._mapping) for row in result}
    new = [d for d in distinct if d.message_id not in existing]
    if new:
        await conn.execute(
            insert(events),
            [new_event_row(topic, base + i, draft, now_us) for i, draft in enumerate(new, 1)],
        )
    if existing:
        await conn.execute(queries.SET_SEQUENCE, {**bind, "last": base + len(new)})
    return base, existing


def _draft_arrays(topic: TopicRef, drafts: Sequence[EventDraft], now_us: int) -> dict[str, Any]:
    """Bind parameters of the PostgreSQL publish statements: one array per draft column."""
    return {
        "ns": topic.namespace,
        "topic": topic.topic,
        "now": now_us,
        "message_id": [d.message_id for d in drafts],
        "title": [d.title for d in drafts],
        "payload": [d.payload.data for d in drafts],
        "content_type": [d.payload.content_type for d in drafts],
        "correlation_id": [d.correlation_id for d in drafts],
    }


def _outcomes(
    topic: TopicRef,
    drafts: Sequence[EventDraft],
    base: int,
    existing: dict[str, Event],
    now_us: int,
) -> list[PublishedEvent]:
    """One outcome per draft: new message ids take base + 1, base + 2, ... in batch order.

    The stored events are built here from the drafts, as the store wrote them,
    rather than read back; `existing` holds the events found already published.
    """
    published_at = from_micros(now_us)
    namespace, topic_id = topic.namespace, topic.topic
    created: dict[str, Event] = {}
    out = []
    for draft in drafts:
        message_id = draft.message_id
        event = existing.get(message_id)
        if event is not None:
            out.append(PublishedEvent(event, already_published=True))
        elif (event := created.get(message_id)) is not None:
            out.append(PublishedEvent(event, already_published=True))  # a repeat in the batch
        else:
            base += 1
            event = created[message_id] = Event(
                namespace,
                topic_id,
                base,
                message_id,
                draft.title,
                draft.payload,
                draft.correlation_id,
                EventStatus.PENDING,
                published_at,
            )
            out.append(PublishedEvent(event, already_published=False))
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
