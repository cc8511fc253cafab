"""Conformance of JournalStore (services/events/store/journal_base.py): every method, on every
backend, through the Protocol alone, with the time from a manual clock.

The journal is one sequence of positions across namespaces, and this module's tests share
its database: each test reads only what it appended, after the head it found at its start
(`base`), and in its own namespace.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from conveyor_core.clock import ManualClock
from conveyor_events.domain.journal import JournalDraft, JournalFilter, JournalPage, JournalRecord
from conveyor_events.store.journal_base import (
    JournalAppendParams,
    JournalReadParams,
    JournalStore,
)

NS = "conformance"  # rebound per test (conftest's namespace fixture): a module shares one database
TRACE = "0af7651916cd43dd8448eb211c80319c"


@pytest.fixture
async def base(journal_store: JournalStore) -> int:
    """The journal's head when the test starts: its records come after."""
    return await journal_store.journal_head()


def record(
    name: str,
    type_: str = "test.thing.happened",
    namespace: str = "",
    subjects: dict[str, str] | None = None,
    correlation_id: str = "",
    trace_id: str = "",
    time: datetime | None = None,
    attributes: dict[str, str] | None = None,
) -> JournalDraft:
    """A draft whose id is unique to this test (record ids are global)."""
    return JournalDraft(
        f"{NS}-{name}",
        type_,
        namespace or NS,
        subjects or {},
        correlation_id,
        trace_id,
        time,
        attributes or {},
    )


async def append(store: JournalStore, clock: ManualClock, *drafts: JournalDraft) -> list[int]:
    return await store.journal_append(JournalAppendParams(drafts, clock.now()))


async def read(
    store: JournalStore,
    after: int,
    limit: int = 100,
    newest_first: bool = False,
    before: int = 0,
    subject: str = "",
) -> JournalPage:
    """This test's records (its namespace; a subject when given) after `after`."""
    journal_filter = JournalFilter(NS, subject=subject)
    return await store.journal_read(
        JournalReadParams(after, journal_filter, limit, newest_first, before)
    )


def names(page: JournalPage) -> list[str]:
    """The records' ids without this test's prefix."""
    return [r.id.removeprefix(f"{NS}-") for r in page.records]


def positions(records: Sequence[JournalRecord]) -> list[int]:
    return [r.position for r in records]


# -- append -----------------------------------------------------------------------------------


async def test_append_gives_consecutive_positions_after_the_head_and_keeps_every_field(
    journal_store: JournalStore, clock: ManualClock, base: int
) -> None:
    at = datetime(2030, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    first = record(
        "r1",
        "queue.work_order.queued",
        subjects={"work_order": "wo-1", "queue": "emails"},
        correlation_id="corr-1",
        trace_id=TRACE,
        time=at,
        attributes={"attempt": "1"},
    )
    assert await append(journal_store, clock, first, record("r2"), record("r3")) == [
        base + 1,
        base + 2,
        base + 3,
    ]
    clock.advance(7)
    assert await append(journal_store, clock, record("r4")) == [base + 4]
    assert await journal_store.journal_head() == base + 4

    page = await read(journal_store, base)
    assert names(page) == ["r1", "r2", "r3", "r4"]
    assert positions(page.records) == [base + 1, base + 2, base + 3, base + 4]
    got = page.records[0]
    assert (got.id, got.type, got.namespace) == (first.id, "queue.work_order.queued", NS)
    assert dict(got.subjects) == {"work_order": "wo-1", "queue": "emails"}
    assert dict(got.attributes) == {"attempt": "1"}
    assert (got.correlation_id, got.trace_id, got.time) == ("corr-1", TRACE, at)
    # A draft without a time is stamped with the append's `now`.
    assert page.records[3].time == clock.now()
    assert page.records[1].time == clock.now() - timedelta(seconds=7)
    assert (page.records[1].subjects, page.records[1].attributes) == ({}, {})


async def test_append_of_an_id_seen_before_returns_its_first_position_and_leaves_no_gap(
    journal_store: JournalStore, clock: ManualClock, base: int
) -> None:
    assert await append(journal_store, clock, record("a"), record("b")) == [base + 1, base + 2]
    again = await append(journal_store, clock, record("b"), record("c"), record("a", "other.type"))
    assert again == [base + 2, base + 3, base + 1], "known ids keep theirs; new ones follow"
    repeated = await append(
        journal_store, clock, record("d"), record("e"), record("d", "other.type")
    )
    assert repeated == [base + 4, base + 5, base + 4], "a repeat in one call refers to the first"
    assert await append(journal_store, clock, record("a"), record("e")) == [base + 1, base + 5]
    assert await journal_store.journal_head() == base + 5, "only known ids: no position used"
    page = await read(journal_store, base)
    assert names(page) == ["a", "b", "c", "d", "e"]
    assert page.records[0].type == "test.thing.happened", "the first append wins"
    assert page.records[3].type == "test.thing.happened", "and the first draft of a call"


async def test_append_of_nothing_returns_nothing(
    journal_store: JournalStore, clock: ManualClock, base: int
) -> None:
    assert await append(journal_store, clock) == []
    assert await journal_store.journal_head() == base
    assert await append(journal_store, clock, record("a")) == [base + 1]


async def test_concurrent_appends_get_unique_gap_free_positions(
    journal_store: JournalStore, clock: ManualClock, base: int
) -> None:
    async def appender(n: int) -> list[int]:
        # Every appender also sends two ids shared with all the others.
        ids = [f"w{n}-{i}" for i in range(5)] + ["shared-1", "shared-2"]
        return await append(journal_store, clock, *(record(i) for i in ids))

    results = await asyncio.gather(*(appender(n) for n in range(6)))
    assert len({tuple(r[-2:]) for r in results}) == 1, "one position per shared id"
    total = 6 * 5 + 2
    assert await journal_store.journal_head() == base + total
    page = await read(journal_store, base)
    assert positions(page.records) == list(range(base + 1, base + total + 1))
    assert len({r.id for r in page.records}) == total
    by_id = {r.id: r.position for r in page.records}
    for n, got in enumerate(results):
        assert got == [
            by_id[f"{NS}-{i}"] for i in [*(f"w{n}-{j}" for j in range(5)), "shared-1", "shared-2"]
        ]


# -- read -------------------------------------------------------------------------------------


async def test_read_filters_by_namespace_type_prefix_subject_and_correlation(
    journal_store: JournalStore, clock: ManualClock, base: int
) -> None:
    await append(
        journal_store,
        clock,
        record(
            "1", "queue.work_order.queued", subjects={"work_order": "wo-a"}, correlation_id="c1"
        ),
        record("2", "queue.workxorder.fake", subjects={"work_order": "wo-b"}, correlation_id="c1"),
        record(
            "3", "queue.work_order.leased", subjects={"work_order": "wo-a"}, correlation_id="c2"
        ),
        record("4", "queue.work_order.leased", f"{NS}-b", subjects={"queue": "wo-a"}),
        record("5", "executor.run.started", subjects={"run": "r-1", "work_order": "wo-a"}),
    )

    async def ids(
        namespace: str = NS, type_prefix: str = "", subject: str = "", correlation_id: str = ""
    ) -> list[str]:
        journal_filter = JournalFilter(namespace, type_prefix, subject, correlation_id)
        page = await journal_store.journal_read(JournalReadParams(base, journal_filter, 100))
        return names(page)

    assert await ids() == ["1", "2", "3", "5"]
    assert await ids(f"{NS}-b") == ["4"]
    assert await ids("", type_prefix="queue.work_order.") == ["1", "3", "4"], "_ is literal"
    assert await ids(type_prefix="queue.") == ["1", "2", "3"]
    assert await ids("", subject="wo-a") == ["1", "3", "4", "5"], "a subject of any kind"
    assert await ids(correlation_id="c1") == ["1", "2"]
    assert await ids(type_prefix="queue.", subject="wo-a") == ["1", "3"]
    assert await ids(subject="nobody") == []


async def test_read_pages_by_next_position_up_to_the_head(
    journal_store: JournalStore, clock: ManualClock, base: int
) -> None:
    await append(
        journal_store,
        clock,
        *(record(f"r{i}", subjects={"k": "even" if i % 2 else "odd"}) for i in range(9)),
    )
    head = base + 9
    page = await read(journal_store, base, limit=4)
    assert positions(page.records) == [base + 1, base + 2, base + 3, base + 4]
    assert (page.next_position, page.head_position) == (base + 4, head), "full: the last one"
    page = await read(journal_store, page.next_position, limit=4)
    assert positions(page.records) == [base + 5, base + 6, base + 7, base + 8]
    page = await read(journal_store, page.next_position, limit=4)
    assert positions(page.records) == [base + 9] and page.next_position == head
    page = await read(journal_store, page.next_position, limit=4)
    assert (list(page.records), page.next_position, page.head_position) == ([], head, head)
    # Filtered: a short page means everything up to the head was examined.
    page = await read(journal_store, base, limit=3, subject="even")
    assert positions(page.records) == [base + 2, base + 4, base + 6]
    assert page.next_position == base + 6
    page = await read(journal_store, page.next_position, limit=3, subject="even")
    assert positions(page.records) == [base + 8] and page.next_position == head
    # Past the head: nothing, and the position given back.
    page = await read(journal_store, head + 50)
    assert (list(page.records), page.next_position, page.head_position) == ([], head + 50, head)


async def test_newest_first_reads_back_from_the_head_or_from_before_a_position(
    journal_store: JournalStore, clock: ManualClock, base: int
) -> None:
    await append(
        journal_store,
        clock,
        *(record(f"r{i}", subjects={"k": "even" if i % 2 else "odd"}) for i in range(9)),
    )
    head = base + 9

    async def newest(
        before: int = 0, limit: int = 3, after: int = base, subject: str = ""
    ) -> JournalPage:
        return await read(journal_store, after, limit, True, before, subject)

    page = await newest()
    assert positions(page.records) == [head, head - 1, head - 2]
    assert (page.next_position, page.head_position) == (head - 2, head)
    page = await newest(before=page.next_position)
    assert positions(page.records) == [base + 6, base + 5, base + 4]
    page = await newest(before=base + 4, limit=10)
    assert positions(page.records) == [base + 3, base + 2, base + 1]
    assert page.next_position == 0, "short: nothing older"
    page = await newest(limit=2, subject="even")
    assert positions(page.records) == [base + 8, base + 6] and page.head_position == head
    page = await newest(limit=10, after=base + 5)
    assert positions(page.records) == [head, base + 8, base + 7, base + 6], "bounded below"
    assert page.next_position == 0
    page = await newest(after=head)
    assert (list(page.records), page.next_position, page.head_position) == ([], 0, head)


async def test_journal_head_is_the_highest_position_handed_out(
    journal_store: JournalStore, clock: ManualClock, base: int
) -> None:
    positions_given = await append(journal_store, clock, record("a"), record("b"))
    assert await journal_store.journal_head() == max(positions_given) == base + 2
    other = await append(journal_store, clock, record("c", namespace=f"{NS}-b"))
    assert await journal_store.journal_head() == other[0] == base + 3, "one head for all"
    page = await read(journal_store, await journal_store.journal_head())
    assert page.records == [] and page.head_position == base + 3
