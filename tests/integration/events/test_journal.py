"""AppendJournalRecords and ReadJournal over gRPC, on SQLite and on PostgreSQL + Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import grpc
import pytest
from google.protobuf import timestamp_pb2
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from conveyor.events.v1 import service_pb2 as rpc
from conveyor_core.grpc import rich_error_details
from conveyor_core.settings import CoreSettings
from conveyor_events.settings import EventStoreSettings
from tests.helpers.journal import JournalEnv, positions_of, record


@pytest.fixture
async def env(core: CoreSettings) -> AsyncIterator[JournalEnv]:
    journal_env = await JournalEnv(
        core, EventStoreSettings(max_journal_batch=50, max_journal_attributes=4)
    ).start()
    yield journal_env
    await journal_env.stop()


async def test_append_assigns_consecutive_positions_and_reads_back_every_field(
    env: JournalEnv,
) -> None:
    at = timestamp_pb2.Timestamp()
    at.FromDatetime(datetime(2030, 5, 6, 7, 8, 9, 123456, tzinfo=UTC))
    first = record(
        "r-1",
        "queue.work_order.queued",
        subjects={"work_order": "wo-1", "queue": "emails"},
        correlation_id="corr-1",
        attributes={"attempt": "1"},
        trace_id="0af7651916cd43dd8448eb211c80319c",
        time=at,
    )
    assert await env.append(first, record("r-2"), record("r-3")) == [1, 2, 3]
    assert await env.append(record("r-4")) == [4]

    page = await env.read()
    assert positions_of(page.records) == [1, 2, 3, 4] and page.next_position == 4
    got = page.records[0]
    assert (got.id, got.type, got.namespace) == ("r-1", "queue.work_order.queued", "test")
    assert dict(got.subjects) == {"work_order": "wo-1", "queue": "emails"}
    assert dict(got.attributes) == {"attempt": "1"}
    assert (got.correlation_id, got.trace_id) == ("corr-1", "0af7651916cd43dd8448eb211c80319c")
    assert got.time == at
    # A record sent without a time is stamped on append.
    assert page.records[1].time.ToDatetime(tzinfo=UTC).year >= 2024


async def test_append_is_idempotent_by_record_id(env: JournalEnv) -> None:
    assert await env.append(record("a"), record("b")) == [1, 2]
    # Known ids get their first position back; new ones continue with no gap.
    assert await env.append(record("b"), record("c"), record("a", type="other.type")) == [2, 3, 1]
    # An id repeated inside one call refers to its first occurrence.
    assert await env.append(record("d"), record("e"), record("d")) == [4, 5, 4]
    records = await env.read_all()
    assert [(r.position, r.id) for r in records] == [
        (1, "a"),
        (2, "b"),
        (3, "c"),
        (4, "d"),
        (5, "e"),
    ]
    assert records[0].type == "test.thing.happened"  # the first append wins


async def test_concurrent_appends_get_gap_free_unique_positions(env: JournalEnv) -> None:
    async def appender(n: int) -> list[int]:
        # Every appender also sends two ids shared with all the others.
        ids = [f"w{n}-{i}" for i in range(10)] + ["shared-1", "shared-2"]
        return await env.append(*(record(i) for i in ids))

    results = await asyncio.gather(*(appender(n) for n in range(12)))
    assert len({tuple(r[-2:]) for r in results}) == 1  # one position per shared id
    records = await env.read_all(page_size=17)
    assert positions_of(records) == list(range(1, 12 * 10 + 2 + 1))
    assert len({r.id for r in records}) == len(records)


async def test_read_filters_by_namespace_type_prefix_subject_and_correlation(
    env: JournalEnv,
) -> None:
    await env.append(
        record(
            "1", "queue.work_order.queued", subjects={"work_order": "wo-a"}, correlation_id="c1"
        ),
        record("2", "queue.workxorder.fake", subjects={"work_order": "wo-b"}, correlation_id="c1"),
        record(
            "3", "queue.work_order.leased", subjects={"work_order": "wo-a"}, correlation_id="c2"
        ),
        record("4", "queue.work_order.leased", namespace="other", subjects={"queue": "wo-a"}),
        record("5", "executor.run.started", subjects={"run": "r-1", "work_order": "wo-a"}),
    )

    async def ids(**filter_fields: str) -> list[str]:
        return [r.id for r in await env.read_all(**filter_fields)]

    assert await ids(namespace="other") == ["4"]
    # "_" is matched literally, not as a LIKE wildcard.
    assert await ids(type_prefix="queue.work_order.") == ["1", "3", "4"]
    assert await ids(subject="wo-a") == ["1", "3", "4", "5"]
    assert await ids(correlation_id="c1") == ["1", "2"]
    assert await ids(namespace="test", type_prefix="queue.", subject="wo-a") == ["1", "3"]
    assert await ids(subject="nobody") == []


async def test_paging_by_next_position(env: JournalEnv) -> None:
    await env.append(
        *(record(f"r{i}", subjects={"k": "even" if i % 2 else "odd"}) for i in range(9))
    )
    page = await env.read(page_size=4)
    assert positions_of(page.records) == [1, 2, 3, 4] and page.next_position == 4
    page = await env.read(after=page.next_position, page_size=4)
    assert positions_of(page.records) == [5, 6, 7, 8] and page.next_position == 8
    page = await env.read(after=page.next_position, page_size=4)
    assert positions_of(page.records) == [9] and page.next_position == 9
    page = await env.read(after=page.next_position, page_size=4)
    assert list(page.records) == [] and page.next_position == 9
    # Filtered: a short page means everything up to the head was examined.
    page = await env.read(page_size=3, subject="even")
    assert positions_of(page.records) == [2, 4, 6] and page.next_position == 6
    page = await env.read(after=6, page_size=3, subject="even")
    assert positions_of(page.records) == [8] and page.next_position == 9
    # Past the head: nothing, and the position given back.
    page = await env.read(after=50)
    assert list(page.records) == [] and page.next_position == 50


async def test_newest_first_reads_the_latest_records_back_to_front(env: JournalEnv) -> None:
    await env.append(
        *(record(f"r{i}", subjects={"k": "even" if i % 2 else "odd"}) for i in range(9))
    )

    async def newest(before: int = 0, page_size: int = 3, **filter_fields: str) -> object:
        return await env.stub.ReadJournal(
            rpc.ReadJournalRequest(
                newest_first=True,
                before_position=before,
                page_size=page_size,
                filter=rpc.JournalFilter(**filter_fields),
            )
        )

    page = await newest()
    assert positions_of(page.records) == [9, 8, 7] and page.next_position == 7
    assert page.head_position == 9
    page = await newest(before=page.next_position)
    assert positions_of(page.records) == [6, 5, 4] and page.next_position == 4
    page = await newest(before=4, page_size=10)
    assert positions_of(page.records) == [3, 2, 1] and page.next_position == 0
    # Filtered, and bounded below by after_position too.
    page = await newest(page_size=2, subject="even")
    assert positions_of(page.records) == [8, 6] and page.head_position == 9
    page = await env.stub.ReadJournal(
        rpc.ReadJournalRequest(after_position=5, newest_first=True, page_size=10)
    )
    assert positions_of(page.records) == [9, 8, 7, 6] and page.next_position == 0
    # Oldest first, the head is given too: a subscriber continues from it.
    assert (await env.read(page_size=2)).head_position == 9
    code, fields = await _violations(newest(before=-1))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "before_position" in fields
    code, fields = await _violations(
        env.stub.ReadJournal(rpc.ReadJournalRequest(before_position=3))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "before_position" in fields


async def _violations(call: object) -> tuple[grpc.StatusCode, dict[str, str]]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    details = rich_error_details(caught.value)
    return caught.value.code(), dict(details.field_violations)


async def test_invalid_records_are_refused_with_field_paths_and_nothing_is_stored(
    env: JournalEnv,
) -> None:
    code, fields = await _violations(
        env.append(
            record("ok"),
            record("", type="Bad Type", namespace="Not-OK"),
            record("x" * 257, subjects={"Bad-Kind": "v"}, attributes={"k": "v" * 1025}),
            record("y", trace_id="xyz", attributes={str(i): "v" for i in range(5)}),
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert {
        "records[1].id",
        "records[1].type",
        "records[1].namespace",
        "records[2].id",
        "records[2].subjects['Bad-Kind']",
        "records[2].attributes['k']",
        "records[3].trace_id",
        "records[3].attributes",
    } <= set(fields)
    assert "records[0].id" not in fields
    code, fields = await _violations(env.append(*(record(f"r{i}") for i in range(51))))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "records" in fields
    assert await env.read_all() == []


async def test_invalid_reads_are_refused(env: JournalEnv) -> None:
    code, fields = await _violations(env.read(after=-1))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "after_position" in fields
    code, fields = await _violations(env.read(page_size=-1))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "page_size" in fields
    code, fields = await _violations(env.read(namespace="Bad NS", type_prefix="t" * 129))
    assert {"filter.namespace", "filter.type_prefix"} <= set(fields)


@pytest.mark.parametrize("record_spans", [True, False])
async def test_each_appended_record_is_a_span_in_its_own_trace_unless_turned_off(
    core: CoreSettings, spans: InMemorySpanExporter, record_spans: bool
) -> None:
    journal = await JournalEnv(core, EventStoreSettings(journal_record_spans=record_spans)).start()
    try:
        spans.clear()
        traces = ["0af7651916cd43dd8448eb211c80319c", "1bf7651916cd43dd8448eb211c80319d"]
        await journal.append(record("s-1", trace_id=traces[0]), record("s-2", trace_id=traces[1]))
    finally:
        await journal.stop()
    appended = [s for s in spans.get_finished_spans() if s.name == "journal.append"]
    if not record_spans:
        assert appended == []
        return
    assert sorted(f"{s.context.trace_id:032x}" for s in appended) == traces
    assert {s.attributes["conveyor.journal.position"] for s in appended} == {1, 2}
