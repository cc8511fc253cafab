"""Leadership changes are counted and the leader gauge says which replica leads."""

from __future__ import annotations

from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from conveyor_core.coordination import InProcessCoordination, Lease
from conveyor_scheduler.leader import LeaderElection
from tests.helpers.e2e import eventually
from tests.helpers.metrics import metric_value


async def test_elected_released_and_the_leader_gauge(metric_reader: InMemoryMetricReader) -> None:
    def changes(change: str) -> float:
        return metric_value(metric_reader, "conveyor.scheduler.leader_changes", {"change": change})

    before = {change: changes(change) for change in ("elected", "released")}
    leaders_before = metric_value(metric_reader, "conveyor.scheduler.leader")
    coordination = InProcessCoordination()
    await coordination.start()

    async def elected(lease: Lease) -> None:
        return None

    async def deposed() -> None:
        return None

    replicas = [
        LeaderElection(coordination, "metrics-test", 5.0, 0.05, 0.05, elected, deposed)
        for _ in range(2)
    ]
    try:
        for replica in replicas:
            await replica.start()

        async def one_leader() -> LeaderElection | None:
            leaders = [r for r in replicas if r.is_leader]
            return leaders[0] if len(leaders) == 1 else None

        first = await eventually(one_leader, "one leader", 10)
        assert changes("elected") - before["elected"] == 1
        assert metric_value(metric_reader, "conveyor.scheduler.leader") - leaders_before == 1

        await first.stop()
        await eventually(one_leader, "the other replica took over", 10)
        assert changes("released") - before["released"] == 1
        assert changes("elected") - before["elected"] == 2
        assert metric_value(metric_reader, "conveyor.scheduler.leader") - leaders_before == 1
    finally:
        for replica in replicas:
            await replica.stop()
        await coordination.stop()
    assert metric_value(metric_reader, "conveyor.scheduler.leader") == leaders_before
