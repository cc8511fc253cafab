"""Concurrent publishers and reservers: one event per message id, no gaps, exclusive reserves."""

from __future__ import annotations

import asyncio
from collections import Counter

from sqlalchemy import text
from sqlalchemy.dialects import postgresql

from conveyor.events.v1 import service_pb2 as rpc
from conveyor_core.clock import to_micros
from conveyor_core.settings import CoreSettings
from conveyor_events.domain.model import EventDraft, Payload, TopicRef
from conveyor_events.store.writes import publish_in
from tests.helpers.events import NAMESPACE, EventsEnv, S, draft, topic_name


async def test_concurrent_publishes_of_one_message_id_store_one_event(
    env: EventsEnv, topic: str
) -> None:
    responses = await asyncio.gather(
        *(env.publish([draft("same", title=f"attempt {i}")]) for i in range(40))
    )
    events = [r.events[0] for r in responses]
    assert {(e.sequence, e.message_id) for e in events} == {(1, "same")}
    assert len({e.title for e in events}) == 1, "every caller gets the original event"
    assert sorted(r.already_published[0] for r in responses) == [False] + [True] * 39
    assert len(await env.events()) == 1
    assert (await env.publish([draft("next")])).events[0].sequence == 2


async def test_concurrent_batches_sharing_message_ids_leave_no_gaps(
    env: EventsEnv, topic: str
) -> None:
    batches = [[draft("shared-a"), draft(f"own-{i}"), draft("shared-b")] for i in range(12)]
    await asyncio.gather(*(env.publish(batch) for batch in batches))
    stored = await env.events()
    assert [e.sequence for e in stored] == list(range(1, 15))
    assert Counter(e.message_id for e in stored) == Counter(
        ["shared-a", "shared-b", *(f"own-{i}" for i in range(12))]
    )


async def test_sequences_are_gap_free_in_commit_order_under_concurrent_publishers(
    env: EventsEnv, topic: str
) -> None:
    publishers, batches, size = 16, 8, 4
    done = asyncio.Event()
    snapshots: list[list[int]] = []

    async def publisher(p: int) -> list[list[int]]:
        seen = []
        for b in range(batches):
            response = await env.publish([draft(f"p{p}-b{b}-{i}") for i in range(size)])
            seen.append([e.sequence for e in response.events])
        return seen

    async def reader() -> None:
        while not done.is_set():
            page = await env.stub.ListEvents(
                rpc.ListEventsRequest(parent=topic_name(), page_size=1000)
            )
            snapshots.append([e.sequence for e in page.events])

    watching = asyncio.create_task(reader())
    try:
        results = await asyncio.gather(*(publisher(p) for p in range(publishers)))
    finally:
        done.set()
        await watching
    total = publishers * batches * size
    assert [e.sequence for e in await env.events()] == list(range(1, total + 1))
    for batch in (b for seen in results for b in seen):
        assert batch == list(range(batch[0], batch[0] + size)), "a batch takes a contiguous run"
    assert len(snapshots) >= 2
    for snapshot in snapshots:  # a reader never sees a later sequence before an earlier one
        assert snapshot == list(range(1, len(snapshot) + 1))


async def _consume_all(env: EventsEnv, run_id: str, batch: int, seen: Counter) -> None:
    while True:
        reserved = await env.reserve(run_id, n=batch)
        if not reserved:
            return
        for event in reserved:
            assert event.reserved_by == run_id
            seen[event.sequence] += 1
        consumed = await env.stub.ConsumeEvents(
            rpc.ConsumeEventsRequest(parent=topic_name(), run_id=run_id)
        )
        assert consumed.consumed_count == len(reserved)


async def test_eight_concurrent_reservers_each_get_distinct_events_and_none_is_lost(
    env: EventsEnv, topic: str
) -> None:
    total = 600
    for chunk in range(0, total, 200):
        await env.publish([draft(f"m{i}") for i in range(chunk, chunk + 200)])
    seen: Counter = Counter()
    await asyncio.gather(*(_consume_all(env, f"run-{i}", 1 + i * 5, seen) for i in range(8)))
    assert set(seen) == set(range(1, total + 1)), "an event was lost"
    assert max(seen.values()) == 1, "an event was reserved by two runs"
    stats = await env.stats()
    assert (stats.pending, stats.reserved, stats.consumed) == (0, 0, total)
    events = await env.events(statuses=[S.EVENT_STATUS_CONSUMED])
    assert all(e.consumed_by == e.reserved_by for e in events)


async def test_two_replicas_on_one_database_never_reserve_the_same_event(
    core: CoreSettings,
) -> None:
    """Two servers on one database (PostgreSQL+Redis; the same SQLite file in the embedded case)."""
    first = await EventsEnv(core).start()
    second = await EventsEnv(core).start()
    try:
        await first.create_topic()
        await asyncio.gather(
            first.publish([draft(f"a{i}") for i in range(150)]),
            second.publish([draft(f"b{i}") for i in range(150)]),
        )
        seen: Counter = Counter()
        await asyncio.gather(
            *(
                _consume_all(env, f"{n}-{i}", 7, seen)
                for n, env in (("a", first), ("b", second))
                for i in range(3)
            )
        )
        assert set(seen) == set(range(1, 301)) and max(seen.values()) == 1
    finally:
        await second.stop()
        await first.stop()


async def _wait_for_lock_waiter(env: EventsEnv) -> None:
    """Poll until another backend of this database waits on a lock (the topic row's).

    Each poll is its own transaction: a backend reads pg_stat_activity once per
    transaction and keeps that snapshot until it ends.
    """
    deadline = asyncio.get_running_loop().time() + 30
    waiting = text(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    probe_engine = env.service.engine_db.execution_options(isolation_level="AUTOCOMMIT")
    async with probe_engine.connect() as probe:
        while (await probe.execute(waiting)).scalar_one() == 0:
            assert asyncio.get_running_loop().time() < deadline, "the publish never waited"
            await asyncio.sleep(0.01)


async def test_publish_racing_a_committing_publish_of_the_same_message_id_returns_it(
    postgres_core: CoreSettings,
) -> None:
    """The race the one-statement publish loses: its snapshot predates the other's commit.

    A transaction publishes "m" and holds the topic lock; a PublishEvents of
    "m" and "n" starts (its statement's snapshot cannot see "m") and waits on
    that lock. When the first commits, the unique index refuses the second
    "m": the call must look the ids up again and answer with the first "m".
    """
    env = await EventsEnv(postgres_core).start()
    try:
        await env.create_topic()
        engine = env.service.engine_db
        topic = TopicRef(NAMESPACE, "orders")
        async with engine.connect() as holder:
            await holder.begin()
            first = await publish_in(
                holder,
                postgresql.insert,
                topic,
                [EventDraft("m", "first m", Payload(b"1", "text/plain"))],
                to_micros(env.clock.now()),
            )
            racing = asyncio.create_task(env.publish([draft("m", title="second m"), draft("n")]))
            await _wait_for_lock_waiter(env)
            await holder.commit()
        response = await racing
        assert [(e.sequence, e.message_id, e.title) for e in response.events] == [
            (1, "m", "first m"),
            (2, "n", "event n"),
        ]
        assert list(response.already_published) == [True, False]
        assert first[0].event.sequence == 1
        stored = await env.events()
        assert [(e.sequence, e.message_id) for e in stored] == [(1, "m"), (2, "n")]
        assert (await env.publish([draft("o")])).events[0].sequence == 3, "no sequence was lost"
    finally:
        await env.stop()
