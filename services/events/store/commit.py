"""`Commit`: consume a run's reservations, publish events and store state, in ONE transaction.

Steps, in this order, inside one transaction:

1. claim the run id: insert `events_commits(namespace, run_id)`. A repeated
   commit finds the row and returns its stored result (`replayed`). On
   PostgreSQL a concurrent duplicate waits on the primary key until the first
   transaction ends, so two copies of one commit never both apply;
2. check that every consumed topic exists;
3. consume the run's reservations in the consumed topics;
4. publish, topic by topic in name order (a fixed lock order, so two commits
   publishing to the same topics cannot deadlock);
5. store the handler state at its expected version;
6. record the result in the claimed row.

Any error (unknown topic, version conflict, ...) rolls back all of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from conveyor_events.domain.model import CommitResult, Event, EventDraft, HandlerState, TopicRef
from conveyor_events.errors import TopicNotFound
from conveyor_events.store.base import CommitParams
from conveyor_events.store.rows import (
    commit_result_to_json,
    event_from_row,
    state_from_json,
)
from conveyor_events.store.tables import commits, events, topics
from conveyor_events.store.writes import InsertFactory, consume_in, publish_in, state_write_in


async def apply_commit(
    conn: AsyncConnection, insert: InsertFactory, params: CommitParams, now_us: int
) -> CommitResult:
    """Apply `params` on `conn` (inside the caller's transaction) or replay the first result."""
    claim = (
        insert(commits)
        .values(namespace=params.namespace, run_id=params.run_id, result={}, created_at=now_us)
        .on_conflict_do_nothing(index_elements=["namespace", "run_id"])
        .returning(commits.c.run_id)
    )
    if (await conn.execute(claim)).first() is None:
        return await _replay(conn, params.namespace, params.run_id)
    await _check_topics_exist(conn, params.consume_topics)
    consumed = 0
    if params.consume_topics:
        consumed = await consume_in(
            conn,
            params.namespace,
            [t.topic for t in params.consume_topics],
            params.run_id,
            (),
            now_us,
        )
    published = await _publish_all(conn, insert, params.publish, now_us)
    state = None
    if params.state is not None:
        state = await state_write_in(conn, insert, params.state, now_us)
    await conn.execute(
        update(commits)
        .where(commits.c.namespace == params.namespace, commits.c.run_id == params.run_id)
        .values(result=commit_result_to_json(consumed, published, state))
    )
    return CommitResult(consumed, tuple(published), state)


async def _publish_all(
    conn: AsyncConnection,
    insert: InsertFactory,
    publish: Sequence[tuple[TopicRef, tuple[EventDraft, ...]]],
    now_us: int,
) -> list[Event]:
    """Publish each topic's drafts in topic-name order; return the events in request order."""
    by_topic: dict[TopicRef, list[int]] = {}
    for index, (topic, _) in enumerate(publish):
        by_topic.setdefault(topic, []).append(index)
    results: dict[int, list[Event]] = {}
    for topic in sorted(by_topic, key=lambda t: t.topic):
        indexes = by_topic[topic]
        drafts = [d for i in indexes for d in publish[i][1]]
        outcome = iter(await publish_in(conn, insert, topic, drafts, now_us))
        for i in indexes:
            results[i] = [next(outcome).event for _ in publish[i][1]]
    return [event for i in range(len(publish)) for event in results[i]]


async def _check_topics_exist(conn: AsyncConnection, refs: Sequence[TopicRef]) -> None:
    if not refs:
        return
    namespace = refs[0].namespace
    result = await conn.execute(
        select(topics.c.topic).where(
            topics.c.namespace == namespace, topics.c.topic.in_([r.topic for r in refs])
        )
    )
    found = set(result.scalars())
    for ref in refs:
        if ref.topic not in found:
            raise TopicNotFound(ref)


async def _replay(conn: AsyncConnection, namespace: str, run_id: str) -> CommitResult:
    stored: dict[str, Any] = (
        await conn.execute(
            select(commits.c.result).where(
                commits.c.namespace == namespace, commits.c.run_id == run_id
            )
        )
    ).scalar_one()
    keys = [(topic, sequence) for topic, sequence in stored["published"]]
    found: dict[tuple[str, int], Event] = {}
    if keys:
        result = await conn.execute(
            select(events).where(
                events.c.namespace == namespace,
                tuple_(events.c.topic, events.c.sequence).in_(keys),
            )
        )
        found = {(row.topic, row.sequence): event_from_row(row._mapping) for row in result}
    state: HandlerState | None = state_from_json(namespace, stored["state"])
    return CommitResult(stored["consumed"], tuple(found[key] for key in keys), state, replayed=True)
