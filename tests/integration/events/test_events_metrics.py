"""The event store's metrics (conveyor_events.metrics): publish / reserve / consume /
release / skip counters, pending, reserved and stale gauges per topic, journal appends
and the subscribers' lag."""

from __future__ import annotations

import uuid

from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from conveyor.events.v1 import service_pb2 as rpc
from conveyor.events.v1 import service_pb2_grpc
from conveyor_events.metrics import SUBSCRIBERS
from tests.helpers.e2e import eventually
from tests.helpers.events import NAMESPACE, EventsEnv, draft, topic_name
from tests.helpers.journal import record
from tests.helpers.metrics import metric_value


async def test_counters_and_gauges_per_topic(
    env: EventsEnv, metric_reader: InMemoryMetricReader
) -> None:
    topic = f"t{uuid.uuid4().hex[:12]}"  # counters are cumulative over the session
    labels = {"namespace": NAMESPACE, "topic": topic}

    def value(name: str, **extra: str) -> float:
        return metric_value(metric_reader, f"conveyor.events.{name}", labels | extra)

    await env.create_topic(topic)
    await env.publish([draft(f"m{i}") for i in range(6)], topic)
    await env.publish([draft("m0"), draft("m6")], topic)  # m0 again: not counted twice
    reserved = await env.reserve("run-1", 4, topic)
    assert len(reserved) == 4
    parent = topic_name(topic)
    await env.stub.ConsumeEvents(
        rpc.ConsumeEventsRequest(
            parent=parent, run_id="run-1", sequences=[e.sequence for e in reserved[:2]]
        )
    )
    await env.stub.ReleaseEvents(rpc.ReleaseEventsRequest(parent=parent, run_id="run-1"))
    await env.stub.SkipEvent(
        rpc.SkipEventRequest(
            name=f"{parent}/events/{reserved[3].sequence}", skipped_by="ops", reason="bad data"
        )
    )
    await env.reserve("run-2", 1, topic)

    assert value("published") == 7
    assert value("reserved") == 5
    assert value("consumed") == 2
    assert value("released") == 2
    assert value("skipped") == 1

    gauges = env.service.gauges
    await gauges.refresh()
    assert value("live", status="pending") == 3  # 7 - 2 consumed - 1 skipped - 1 reserved
    assert value("live", status="reserved") == 1
    assert value("stale") == 0
    env.clock.advance(env.service.settings.stale_after_seconds + 1)
    await gauges.refresh()
    assert value("stale") == 3


async def test_journal_appends_by_source_and_subscriber_lag(
    env: EventsEnv, metric_reader: InMemoryMetricReader
) -> None:
    assert env.platform is not None
    journal = service_pb2_grpc.JournalServiceStub(env._channel)
    before = {
        source: metric_value(metric_reader, "conveyor.journal.appended", {"source": source})
        for source in ("queue", "other")
    }
    run = uuid.uuid4().hex
    await journal.AppendJournalRecords(
        rpc.AppendJournalRecordsRequest(
            records=[
                record(f"{run}-1", type="queue.work_order.queued"),
                record(f"{run}-2", type="queue.work_order.leased"),
                record(f"{run}-3", type="custom.thing.happened"),
            ]
        )
    )

    def appended(source: str) -> float:
        found = metric_value(metric_reader, "conveyor.journal.appended", {"source": source})
        return found - before[source]

    assert (appended("queue"), appended("other")) == (2, 1)

    # A subscriber that read everything has no lag; while it is open it is counted.
    await env.service.gauges.refresh()
    call = journal.SubscribeJournal(rpc.SubscribeJournalRequest(after_position=0))
    try:
        head = await _head(journal)

        async def caught_up() -> bool:
            response = await call.read()
            return response.record.position >= head

        await eventually(caught_up, "the subscription reached the head", 20)

        async def no_lag() -> bool:
            subscribers = metric_value(metric_reader, "conveyor.journal.subscribers")
            lag = metric_value(metric_reader, "conveyor.journal.subscriber_lag")
            return subscribers >= 1 and lag == 0

        await eventually(no_lag, "one open subscriber without lag", 20)

    finally:
        call.cancel()

    # A subscriber still at position 0 (a slow reader) lags by the whole journal.
    slow = SUBSCRIBERS.open(0)
    try:
        assert metric_value(metric_reader, "conveyor.journal.subscriber_lag") == head
    finally:
        SUBSCRIBERS.close(slow)


async def _head(journal: service_pb2_grpc.JournalServiceStub) -> int:
    page = await journal.ReadJournal(rpc.ReadJournalRequest(after_position=0, page_size=1000))
    return max(r.position for r in page.records)
