"""The queue's metrics (conveyor_queue.metrics): flow counters, wait time, expiries,
redrives, and the gauges read from one database snapshot at scrape time."""

from __future__ import annotations

import asyncio
import uuid

from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from conveyor.common.v1 import types_pb2
from conveyor.queue.v1 import service_pb2 as rpc
from tests.helpers.metrics import metric_value
from tests.helpers.queue import NAMESPACE, QueueEnv, queue_name, seconds

ONCE = types_pb2.RetryPolicy(initial_interval=seconds(0), maximum_attempts=1, jitter=0)
TWICE = types_pb2.RetryPolicy(initial_interval=seconds(0), maximum_attempts=2, jitter=0)


async def test_flow_counters_wait_time_expiries_and_redrives(
    env: QueueEnv, metric_reader: InMemoryMetricReader
) -> None:
    queue = f"m{uuid.uuid4().hex[:12]}"  # counters are cumulative over the session
    labels = {"namespace": NAMESPACE, "queue": queue}

    def value(name: str, **extra: str) -> float:
        return metric_value(metric_reader, f"conveyor.queue.{name}", labels | extra)

    for _ in range(3):
        await env.submit(queue, retry_policy=ONCE)
    await env.submit(queue, retry_policy=TWICE, priority=5)  # leased first
    env.clock.advance(2)
    leased = await env.lease(4, queues=[queue], lease=10)
    assert len(leased) == 4
    await env.fail(leased[0], retryable=True)  # a second attempt is allowed: queued again
    await env.complete(leased[1])
    await env.fail(leased[2], retryable=True)  # attempts exhausted -> dead
    env.clock.advance(11)
    assert await env.sweep() == 1  # leased[3]'s lease ran out: one attempt only -> dead

    assert value("submitted") == 4
    assert value("dispatched") == 4
    assert value("completed") == 1
    assert value("failed", outcome="dead") == 1
    assert value("failed", outcome="retried") == 1
    assert value("dead_lettered") == 2
    assert value("lease_expiries", kind="lease_expired") == 1
    waits = [
        point
        for point in _points(metric_reader, "conveyor.queue.wait_time")
        if dict(point.attributes) == labels
    ]
    assert sum(p.count for p in waits) == 4 and min(p.min for p in waits) >= 2.0

    redrive = await env.stub.RedriveWorkOrders(
        rpc.RedriveWorkOrdersRequest(
            parent=queue_name(queue), reason="fixed", requested_by="ops", request_id="r-1"
        )
    )
    assert redrive.redrive.redriven_count == 2
    assert value("redriven") == 2


async def test_gauges_report_depth_in_flight_and_oldest_age_from_one_cached_query(
    env: QueueEnv, metric_reader: InMemoryMetricReader
) -> None:
    queue = f"g{uuid.uuid4().hex[:12]}"
    labels = {"namespace": NAMESPACE, "queue": queue}
    gauges = env.platform.service("queue").gauges  # type: ignore[union-attr]
    for _ in range(3):
        await env.submit(queue, retry_policy=ONCE)
    env.clock.advance(30)
    [leased] = await env.lease(1, queues=[queue])
    await env.fail(leased, retryable=True)  # attempts exhausted -> dead
    [_] = await env.lease(1, queues=[queue])
    env.clock.advance(12)
    await gauges.refresh()

    def gauge(name: str, **extra: str) -> float:
        return metric_value(metric_reader, f"conveyor.queue.{name}", labels | extra)

    assert gauge("depth", state="queued") == 1
    assert gauge("depth", state="leased") == 1
    assert gauge("depth", state="dead") == 1
    assert gauge("in_flight") == 1
    assert gauge("oldest_queued_age") == 42.0

    # Within the refresh interval a collection reuses the snapshot: no new query.
    await env.submit(queue, retry_policy=ONCE)
    assert gauge("depth", state="queued") == 1

    # A scrape from another thread (the Prometheus exporter's) past the interval waits
    # for a fresh snapshot taken on the service's loop.
    gauges.refresh_seconds = 0
    # (the loop stays free meanwhile: it runs the query the scraping thread waits for)
    assert await asyncio.to_thread(gauge, "depth", state="queued") == 2


def _points(reader: InMemoryMetricReader, name: str) -> list:  # type: ignore[type-arg]
    data = reader.get_metrics_data()
    found = []
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    found.extend(metric.data.data_points)
    return found
