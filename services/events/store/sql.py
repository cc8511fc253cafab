"""SQLAlchemy implementation of EventStore for PostgreSQL and SQLite."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from conveyor_core.clock import from_micros, to_micros
from conveyor_events.domain.model import (
    SKIPPABLE,
    CommitResult,
    Event,
    EventRef,
    EventStatus,
    HandlerRef,
    HandlerState,
    PublishedEvent,
    Topic,
    TopicRef,
    TopicStats,
)
from conveyor_events.errors import (
    EventNotFound,
    EventNotSkippable,
    TopicAlreadyExists,
    TopicNotFound,
)
from conveyor_events.store import queries
from conveyor_events.store.base import (
    CommitParams,
    EventListParams,
    PublishParams,
    ReserveParams,
    RunEventsParams,
    SkipParams,
    StaleListParams,
    StateCommitParams,
    TopicListParams,
)
from conveyor_events.store.commit import apply_commit
from conveyor_events.store.rows import (
    event_from_row,
    state_from_row,
    topic_from_row,
    topic_to_row,
)
from conveyor_events.store.tables import events, states, topics
from conveyor_events.store.writes import (
    consume_in,
    publish_in,
    publish_new_postgres,
    release_in,
    state_write_in,
)

log = logging.getLogger(__name__)

ev = events.c
tp = topics.c


class SqlEventStore:
    """EventStore over one async engine (PostgreSQL or SQLite)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._postgres = engine.dialect.name == "postgresql"
        # The same pool, without BEGIN/COMMIT: a lone statement commits by itself.
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._insert = postgresql.insert if self._postgres else sqlite.insert

    # -- topics ---------------------------------------------------------------

    async def topic_insert(self, topic: Topic) -> Topic:
        now_us = to_micros(topic.created_at) if topic.created_at else 0
        stmt = (
            self._insert(topics)
            .values(**topic_to_row(topic, now_us))
            .on_conflict_do_nothing(index_elements=["namespace", "topic"])
            .returning(*topics.columns)
        )
        async with self._engine.begin() as conn:
            row = (await conn.execute(stmt)).first()
        if row is None:
            raise TopicAlreadyExists(topic.ref)
        return topic_from_row(row._mapping)

    async def topic_get(self, ref: TopicRef) -> Topic:
        async with self._engine.connect() as conn:
            return topic_from_row(await _topic_row(conn, ref))

    async def topic_list(self, params: TopicListParams) -> list[Topic]:
        stmt = select(topics).where(tp.namespace == params.namespace, tp.topic > params.after)
        if params.workflow is not None:
            stmt = stmt.where(tp.workflow == params.workflow)
        async with self._engine.connect() as conn:
            result = await conn.execute(stmt.order_by(tp.topic).limit(params.limit))
            return [topic_from_row(row._mapping) for row in result]

    async def topic_stats(self, ref: TopicRef, stale_before: datetime) -> TopicStats:
        where = (ev.namespace == ref.namespace, ev.topic == ref.topic)
        pending = ev.status == EventStatus.PENDING.value
        async with self._engine.connect() as conn:
            await _topic_row(conn, ref)
            counts = {
                EventStatus(row.status): row.n
                for row in await conn.execute(
                    select(ev.status, func.count().label("n")).where(*where).group_by(ev.status)
                )
            }
            oldest, stale = (
                await conn.execute(
                    select(
                        func.min(ev.published_at),
                        func.sum(case((ev.published_at < to_micros(stale_before), 1), else_=0)),
                    ).where(*where, pending)
                )
            ).one()
        return TopicStats(ref, counts, None if oldest is None else from_micros(oldest), stale or 0)

    # -- publish and consumption ---------------------------------------------------

    async def event_publish(self, params: PublishParams) -> list[PublishedEvent]:
        """On PostgreSQL, first as if every message id were new: one statement, no look-up.

        If one was published before, that statement stores nothing and the
        batch is published again with the look-up (store/queries.py).
        """
        now_us = to_micros(params.now)
        if self._postgres:
            try:
                async with self._autocommit.connect() as conn:
                    return await publish_new_postgres(conn, params.topic, params.drafts, now_us)
            except IntegrityError:
                log.debug("a message id in the batch was published before; looking them up")
        async with self._engine.begin() as conn:
            return await publish_in(conn, self._insert, params.topic, params.drafts, now_us)

    async def event_reserve(self, params: ReserveParams) -> list[Event]:
        sql = queries.RESERVE_POSTGRES if self._postgres else queries.RESERVE_SQLITE
        bind = {
            "ns": params.topic.namespace,
            "topic": params.topic.topic,
            "run": params.run_id,
            "now": to_micros(params.now),
            "limit": params.limit,
        }
        async with self._engine.begin() as conn:
            rows = list(await conn.execute(sql, bind))
            if not rows:
                await _topic_row(conn, params.topic)  # NOT_FOUND rather than "nothing pending"
        return sorted((event_from_row(r._mapping) for r in rows), key=lambda e: e.sequence)

    async def event_release(self, params: RunEventsParams) -> int:
        async with self._engine.begin() as conn:
            released = await release_in(conn, params.topic, params.run_id, params.sequences)
            if not released:
                await _topic_row(conn, params.topic)
            return released

    async def event_consume(self, params: RunEventsParams) -> int:
        topic = params.topic
        async with self._engine.begin() as conn:
            consumed = await consume_in(
                conn,
                topic.namespace,
                [topic.topic],
                params.run_id,
                params.sequences,
                to_micros(params.now),
            )
            if not consumed:
                await _topic_row(conn, topic)
            return consumed

    async def event_skip(self, params: SkipParams) -> Event:
        ref = params.event
        stmt = (
            update(events)
            .where(*_event_key(ref), ev.status.in_([s.value for s in SKIPPABLE]))
            .values(
                status=EventStatus.SKIPPED.value,
                skipped_by=params.skipped_by,
                skip_reason=params.reason,
                skipped_at=to_micros(params.now),
            )
            .returning(*events.columns)
        )
        async with self._engine.begin() as conn:
            row = (await conn.execute(stmt)).first()
            if row is None:
                current = await _event(conn, ref)
                if current.status is EventStatus.SKIPPED:
                    return current  # skipping twice keeps the first who and why
                raise EventNotSkippable(ref, current.status)
        return event_from_row(row._mapping)

    # -- reads ------------------------------------------------------------------

    async def event_get(self, ref: EventRef) -> Event:
        async with self._engine.connect() as conn:
            return await _event(conn, ref)

    async def event_list(self, params: EventListParams) -> list[Event]:
        topic = params.topic
        stmt = select(events).where(ev.namespace == topic.namespace, ev.topic == topic.topic)
        if params.statuses:
            stmt = stmt.where(ev.status.in_([s.value for s in params.statuses]))
        if params.after_sequence is not None:
            stmt = stmt.where(
                ev.sequence < params.after_sequence
                if params.newest_first
                else ev.sequence > params.after_sequence
            )
        order = ev.sequence.desc() if params.newest_first else ev.sequence
        async with self._engine.connect() as conn:
            rows = list(await conn.execute(stmt.order_by(order).limit(params.limit)))
            if not rows:
                await _topic_row(conn, topic)
        return [event_from_row(row._mapping) for row in rows]

    async def event_list_stale(self, params: StaleListParams) -> list[Event]:
        stmt = select(events).where(
            ev.namespace == params.namespace,
            ev.status == EventStatus.PENDING.value,
            ev.published_at < to_micros(params.published_before),
        )
        if params.after is not None:
            after = params.after
            stmt = stmt.where(
                tuple_(ev.published_at, ev.topic, ev.sequence)
                > tuple_(after.published_at_us, after.topic, after.sequence)
            )
        stmt = stmt.order_by(ev.published_at, ev.topic, ev.sequence).limit(params.limit)
        async with self._engine.connect() as conn:
            return [event_from_row(row._mapping) for row in await conn.execute(stmt)]

    # -- handler state -------------------------------------------------------------

    async def state_get(self, ref: HandlerRef) -> HandlerState:
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(states).where(
                        states.c.namespace == ref.namespace, states.c.handler == ref.handler
                    )
                )
            ).first()
        return state_from_row(ref, None if row is None else row._mapping)

    async def state_commit(self, params: StateCommitParams) -> HandlerState:
        async with self._engine.begin() as conn:
            return await state_write_in(conn, self._insert, params.write, to_micros(params.now))

    # -- commit ---------------------------------------------------------------------

    async def commit_apply(self, params: CommitParams) -> CommitResult:
        async with self._engine.begin() as conn:
            return await apply_commit(conn, self._insert, params, to_micros(params.now))


def _event_key(ref: EventRef) -> tuple[Any, ...]:
    return (ev.namespace == ref.namespace, ev.topic == ref.topic, ev.sequence == ref.sequence)


async def _topic_row(conn: AsyncConnection, ref: TopicRef) -> Any:
    row = (
        await conn.execute(
            select(topics).where(tp.namespace == ref.namespace, tp.topic == ref.topic)
        )
    ).first()
    if row is None:
        raise TopicNotFound(ref)
    return row._mapping


async def _event(conn: AsyncConnection, ref: EventRef) -> Event:
    row = (await conn.execute(select(events).where(*_event_key(ref)))).first()
    if row is None:
        raise EventNotFound(ref)
    return event_from_row(row._mapping)
