"""conveyor_core.gauges.SnapshotGauges: a refresh a collection started on the loop's own
thread is ended by `stop()`, so it never outlives the service's database engine."""

from __future__ import annotations

import asyncio

from conveyor_core.gauges import Snapshot, SnapshotGauges
from tests.helpers.polling import eventually


async def test_stop_ends_a_refresh_in_flight() -> None:
    started, finished = asyncio.Event(), asyncio.Event()

    async def slow_query() -> Snapshot:
        started.set()
        try:
            await asyncio.Event().wait()  # a query that has not answered yet
        finally:
            finished.set()  # where a pooled connection would go back
        return {}

    gauges = SnapshotGauges("test", slow_query, refresh_seconds=15, timeout_seconds=1)
    gauges.start()
    assert gauges.rows("depth") == []  # on the loop's thread: schedules a refresh, no wait
    await eventually(started.is_set, "the refresh started")
    await gauges.stop()
    assert finished.is_set()  # ended before stop returned, not left to the loop's close


async def test_a_collection_from_another_thread_gets_the_fresh_snapshot() -> None:
    async def query() -> Snapshot:
        return {"depth": [({"queue": "q"}, 3.0)]}

    gauges = SnapshotGauges("test", query, refresh_seconds=15, timeout_seconds=5)
    gauges.start()
    try:
        rows = await asyncio.to_thread(gauges.rows, "depth")
    finally:
        await gauges.stop()
    assert rows == [({"queue": "q"}, 3.0)]
