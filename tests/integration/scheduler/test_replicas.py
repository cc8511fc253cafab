"""Several replicas: one leader fires, nothing twice; a dead leader is replaced within the TTL."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from itertools import pairwise

import pytest

from conveyor.scheduler.v1 import messages_pb2 as pb
from conveyor_core.settings import CoreSettings
from conveyor_scheduler.store.base import FencingTokenStale
from tests.helpers.journal import eventually
from tests.helpers.scheduler import SchedulerCluster, interval

SCHEDULES = 10
ROUNDS = 10
# Short enough for quick failover tests, long enough that a leader on a loaded CI
# machine (2 cores, SQLite firing on the event loop) still renews in time: a lost
# lease mid-test would be a legal failover, but not what the single-leader test checks.
TTL = 3.0


@pytest.fixture
async def cluster(
    core: CoreSettings, fast_scheduler: None, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[SchedulerCluster]:
    monkeypatch.setenv("CONVEYOR_SCHEDULER_LEASE_TTL_SECONDS", str(TTL))
    # Nothing runs the orders here: reading them back often would only load the machine.
    monkeypatch.setenv("CONVEYOR_SCHEDULER_OUTCOME_RECHECK_SECONDS", "30")
    started = await SchedulerCluster(core).start()
    yield started
    await started.stop()


async def _create(cluster: SchedulerCluster) -> list[str]:
    node = cluster.nodes[0]
    await node.create_job()
    names = []
    for i in range(SCHEDULES):
        schedule = await node.create_schedule(
            interval(60, overlap_policy=pb.OVERLAP_POLICY_ALLOW_ALL), f"s{i}"
        )
        names.append(schedule.name)
    return names


async def _all_submitted(cluster: SchedulerCluster, names: list[str], per_schedule: int) -> bool:
    for name in names:
        fires = await cluster.nodes[-1].fires(name)
        if sum(f.outcome == pb.FIRE_OUTCOME_SUBMITTED for f in fires) < per_schedule:
            return False
    return True


async def _assert_each_slot_queued_once(cluster: SchedulerCluster, expected: int) -> None:
    orders = await cluster.host.orders()
    keys = Counter(o.spec.idempotency_key for o in orders)
    assert len(orders) == expected
    assert set(keys.values()) == {1}


async def test_two_replicas_fire_every_slot_exactly_once(cluster: SchedulerCluster) -> None:
    await eventually(lambda: len(cluster.leaders()) == 1)
    names = await _create(cluster)
    seen: set[str] = set()
    tokens_by_round: list[set[int]] = []
    for round_number in range(1, ROUNDS + 1):
        await eventually(lambda n=round_number: _all_submitted(cluster, names, n))
        fresh = [o for o in await cluster.host.orders() if o.name not in seen]
        seen.update(o.name for o in fresh)
        tokens_by_round.append({int(o.spec.labels["fencing_token"]) for o in fresh})
        cluster.clock.advance(timedelta(seconds=60))
    await _assert_each_slot_queued_once(cluster, SCHEDULES * ROUNDS)
    # One leader at a time: every slot was fired under the fencing token of the lease
    # held then. Usually one leader fires them all; on a starved machine a leader that
    # misses its renewal is legally replaced (a higher token), and leadership only
    # ever moves forward: no round holds an order fired under an older lease than a
    # previous round's.
    for earlier, later in pairwise(tokens_by_round):
        assert max(earlier) <= min(later), tokens_by_round


async def test_a_deposed_leaders_firing_transaction_aborts(cluster: SchedulerCluster) -> None:
    await eventually(lambda: len(cluster.leaders()) == 1)
    names = await _create(cluster)
    await eventually(lambda: _all_submitted(cluster, names, 1))
    leader = cluster.leaders()[0]
    old_token = leader.service.election.lease.token
    await cluster.crash(leader)
    await eventually(lambda: len(cluster.leaders()) == 1, limit=TTL + 5)
    successor = cluster.leaders()[0]
    assert successor is not leader
    assert successor.service.election.lease.token > old_token
    cluster.clock.advance(timedelta(seconds=60))
    await eventually(lambda: _all_submitted(cluster, names, 2))  # the successor fired
    await cluster.crash(successor)  # now nobody fires...
    cluster.clock.advance(timedelta(seconds=60))  # ...and slots are due again
    settings = leader.service.settings
    with pytest.raises(FencingTokenStale):  # the old leader's late tick must not commit
        await leader.service.engine.fire_due(settings.leader_lease_name, old_token)
    await _assert_each_slot_queued_once(cluster, SCHEDULES * 2)


async def test_leader_failover_keeps_firing_without_duplicates(cluster: SchedulerCluster) -> None:
    await eventually(lambda: len(cluster.leaders()) == 1)
    names = await _create(cluster)
    await eventually(lambda: _all_submitted(cluster, names, 1))
    leader = cluster.leaders()[0]
    await cluster.crash(leader)
    crashed_at = time.monotonic()
    cluster.clock.advance(timedelta(seconds=60))
    await eventually(lambda: len(cluster.leaders()) == 1, limit=TTL + 5)
    took_over = time.monotonic() - crashed_at
    # Within the lease TTL plus a standby's retry, with room for a loaded CI machine:
    # the successor took over because the lease expired, not by some later sweep.
    assert took_over <= TTL + 3.0
    await eventually(lambda: _all_submitted(cluster, names, 2))
    cluster.clock.advance(timedelta(seconds=60))
    await eventually(lambda: _all_submitted(cluster, names, 3))
    await _assert_each_slot_queued_once(cluster, SCHEDULES * 3)
