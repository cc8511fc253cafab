"""The outbox relay's retry, back-off, wake-ups and lifecycle; the queue's record mapping.

The relay runs for real on in-process coordination, over an in-memory outbox
and an in-memory journal that is idempotent by record id, as the real one is.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from conveyor_core.coordination import InProcessCoordination
from conveyor_core.outbox import Backoff, OutboxNotifier, OutboxRecord, OutboxRelay, trace_id_of
from conveyor_core.runtime import local_address
from conveyor_core.settings import ConfigurationError, CoreSettings, load
from conveyor_queue.domain.model import WorkOrderState as S
from conveyor_queue.store.outbox import in_order, journal_record, record_type
from tests.helpers.journal import eventually

NOW = datetime(2030, 1, 1, tzinfo=UTC)


def rec(n: int) -> OutboxRecord:
    return OutboxRecord(id=f"test/{n}", type="test.thing.happened", namespace="test", time=NOW)


@dataclass
class MemoryBatch:
    records: Sequence[OutboxRecord]
    outbox: MemoryOutbox

    @property
    def claimed(self) -> int:
        return len(self.records)

    @property
    def unreadable(self) -> Sequence[tuple[str, BaseException]]:
        return ()

    async def mark_delivered(self) -> None:
        self.outbox.delivered.update(r.id for r in self.records)


@dataclass
class MemoryOutbox:
    rows: list[OutboxRecord] = field(default_factory=list)
    delivered: set[str] = field(default_factory=set)
    channel: str = "outbox:test"

    @asynccontextmanager
    async def claim(self, limit: int) -> AsyncIterator[MemoryBatch]:
        yield MemoryBatch([r for r in self.rows if r.id not in self.delivered][:limit], self)


@dataclass
class MemoryJournal:
    """Idempotent by id; fails the next `failures` appends with an error."""

    positions: dict[str, int] = field(default_factory=dict)
    calls: int = 0
    failures: int = 0

    async def append(self, records: Sequence[OutboxRecord]) -> None:
        self.calls += 1
        if self.failures:
            self.failures -= 1
            raise ConnectionError("journal unreachable")
        for record in records:
            self.positions.setdefault(record.id, len(self.positions) + 1)


class CountingCoordination(InProcessCoordination):
    def __init__(self) -> None:
        super().__init__()
        self.notifies = 0

    async def notify(self, channel: str) -> None:
        self.notifies += 1
        await super().notify(channel)


@pytest.fixture
async def coordination() -> AsyncIterator[CountingCoordination]:
    coordination = CountingCoordination()
    await coordination.start()
    yield coordination
    await coordination.stop()


def relay(outbox: MemoryOutbox, journal: MemoryJournal, coordination: object, **kw: object):  # type: ignore[no-untyped-def]
    options: dict[str, object] = {"batch_size": 4, "poll_seconds": 30.0}
    options["backoff"] = Backoff(initial=0.001, maximum=0.004, rng=random.Random(7))
    return OutboxRelay(outbox, journal, coordination, **(options | kw))  # type: ignore[arg-type]


def test_backoff_grows_exponentially_within_jitter_and_caps() -> None:
    backoff = Backoff(initial=1.0, maximum=8.0, multiplier=2.0, jitter=0.2, rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(6)]
    for delay, base in zip(delays, [1, 2, 4, 8, 8, 8], strict=True):
        assert base * 0.8 <= delay <= base * 1.2
    backoff.reset()
    assert 0.8 <= backoff.next_delay() <= 1.2
    assert Backoff(initial=1.0, jitter=0.0).next_delay() == 1.0


async def test_failed_appends_are_retried_and_nothing_is_marked_before_success(
    coordination: CountingCoordination,
) -> None:
    outbox, journal = MemoryOutbox([rec(n) for n in range(10)]), MemoryJournal(failures=3)
    outbox_relay = relay(outbox, journal, coordination)
    await outbox_relay.start()
    await eventually(lambda: len(outbox.delivered) == 10)
    await outbox_relay.stop()
    assert outbox_relay.stats.failures == 3 and outbox_relay.stats.delivered == 10
    assert list(journal.positions) == [f"test/{n}" for n in range(10)]  # once each, in order


async def test_a_failing_append_leaves_the_batch_undelivered(
    coordination: CountingCoordination,
) -> None:
    outbox, journal = MemoryOutbox([rec(n) for n in range(3)]), MemoryJournal(failures=1)
    outbox_relay = relay(outbox, journal, coordination)
    with pytest.raises(ConnectionError):
        await outbox_relay.deliver_once()
    assert outbox.delivered == set()
    assert await outbox_relay.deliver_once() == 3
    assert outbox.delivered == {"test/0", "test/1", "test/2"}


async def test_a_notify_wakes_an_idle_relay_long_before_its_poll(
    coordination: CountingCoordination,
) -> None:
    outbox, journal = MemoryOutbox(), MemoryJournal()
    outbox_relay = relay(outbox, journal, coordination)  # polls every 30 s
    notifier = OutboxNotifier(coordination, outbox.channel)
    notifier.enabled = True
    await outbox_relay.start()
    await eventually(lambda: outbox_relay.stats.passes == 1)  # found nothing; waits
    outbox.rows += [rec(1), rec(2)]
    notifier.poke()
    await eventually(lambda: len(outbox.delivered) == 2, limit=5)
    await outbox_relay.stop()
    await notifier.close()


class WakeCounting(CountingCoordination):
    """Counts the wake-ups its listeners' wait() returned."""

    def __init__(self) -> None:
        super().__init__()
        self.wakes = 0

    @asynccontextmanager
    async def _counted(self, channels: Sequence[str]) -> AsyncIterator[object]:
        async with super().listen(channels) as listener:
            outer = self

            class Counted:
                async def wait(self, timeout: float) -> bool:  # noqa: ASYNC109
                    woken = await listener.wait(timeout)
                    outer.wakes += woken
                    return woken

            yield Counted()

    def listen(self, channels: Sequence[str], *, waiter: bool = False):  # type: ignore[no-untyped-def,override]
        return self._counted(channels)


@pytest.mark.parametrize("interval", [0.0, 0.3])
async def test_writes_within_the_wake_interval_share_one_relay_pass(interval: float) -> None:
    """The first write after a quiet spell wakes the relay at once (its record goes alone);
    writes that follow within the notifier's interval share one more wake-up and one
    append (a consumer run writes records at each checkpoint). With no interval, each
    poke is a wake-up of its own."""
    coordination = WakeCounting()
    await coordination.start()
    outbox, journal = MemoryOutbox(), MemoryJournal()
    outbox_relay = relay(outbox, journal, coordination)
    notifier = OutboxNotifier(coordination, outbox.channel, min_interval=interval or 1e-9)
    notifier.enabled = True
    await outbox_relay.start()
    await eventually(lambda: outbox_relay.stats.passes == 1)  # found nothing; waits
    outbox.rows.append(rec(1))
    notifier.poke()
    await eventually(lambda: len(outbox.delivered) == 1)
    for n in (2, 3):  # two transactions, each poking (no await between them: one burst)
        outbox.rows.append(rec(n))
        notifier.poke()
        if not interval:  # here each write is delivered before the next one comes
            await eventually(lambda n=n: len(outbox.delivered) == n)
    await eventually(lambda: len(outbox.delivered) == 3, limit=5)
    await outbox_relay.stop()
    await notifier.close()
    await coordination.stop()
    assert journal.calls == (2 if interval else 3)


async def test_start_and_stop_are_idempotent_and_a_relay_restarts(
    coordination: CountingCoordination,
) -> None:
    outbox, journal = MemoryOutbox([rec(1)]), MemoryJournal()
    outbox_relay = relay(outbox, journal, coordination)
    await outbox_relay.stop()  # before start: nothing happens
    await outbox_relay.start()
    await outbox_relay.start()
    await eventually(lambda: outbox.delivered == {"test/1"})
    await outbox_relay.stop()
    await outbox_relay.stop()
    assert not outbox_relay.running
    outbox.rows.append(rec(2))
    await outbox_relay.start()  # restart: the backlog goes out at once
    await eventually(lambda: outbox.delivered == {"test/1", "test/2"})
    await outbox_relay.stop()


async def test_notifier_coalesces_a_burst_and_is_silent_until_enabled(
    coordination: CountingCoordination,
) -> None:
    notifier = OutboxNotifier(coordination, "outbox:test", min_interval=0.05)
    notifier.poke()
    await asyncio.sleep(0)
    assert coordination.notifies == 0  # no relay configured: no notifies
    notifier.enabled = True
    async with coordination.listen(["outbox:test"]) as listener:
        for _ in range(1000):
            notifier.poke()
        assert await listener.wait(5)
        await eventually(lambda: notifier._task is not None and notifier._task.done())
    assert 1 <= coordination.notifies <= 2
    await notifier.close()


def test_trace_id_of_a_traceparent() -> None:
    assert trace_id_of("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01") == (
        "0af7651916cd43dd8448eb211c80319c"
    )
    assert trace_id_of("") == "" and trace_id_of("garbage") == ""
    assert trace_id_of("00-" + "0" * 32 + "-b7ad6b7169203331-01") == ""


@pytest.mark.parametrize(
    ("from_state", "to_state", "timeout_kind", "expected"),
    [
        (None, S.QUEUED, None, "queued"),
        (S.QUEUED, S.LEASED, None, "leased"),
        (S.LEASED, S.SUCCEEDED, None, "succeeded"),
        (S.LEASED, S.QUEUED, None, "retry_scheduled"),
        (S.LEASED, S.QUEUED, "HEARTBEAT", "lease_expired"),
        (S.LEASED, S.FAILED, None, "failed"),
        (S.QUEUED, S.FAILED, "SCHEDULE_TO_START", "failed"),
        (S.LEASED, S.DEAD, "START_TO_CLOSE", "dead"),
        (S.QUEUED, S.CANCELLED, None, "cancelled"),
        (S.LEASED, S.LEASED, None, "cancel_requested"),
        (S.LEASED, S.CANCELLED, None, "cancelled"),
        (S.DEAD, S.QUEUED, None, "redriven"),
    ],
)
def test_record_types(
    from_state: S | None, to_state: S, timeout_kind: str | None, expected: str
) -> None:
    assert record_type(from_state, to_state, timeout_kind) == f"queue.work_order.{expected}"


def test_a_history_row_becomes_a_journal_record() -> None:
    order_id = uuid.uuid4()
    row = {
        "seq": 42,
        "work_order_id": order_id,
        "namespace": "acme",
        "queue": "emails",
        "from_state": "LEASED",
        "to_state": "QUEUED",
        "at": 1_900_000_000_000_000,
        "attempt": 2,
        "reason": "x" * 1000,
        "actor": "sweeper",
        "timeout_kind": "HEARTBEAT",
        "failure": {"type": "timeout", "message": "secret", "retryable": True},
        "correlation_id": "corr-1",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    }
    record = journal_record(row)
    assert (record.id, record.type, record.namespace) == (
        "queue/42",
        "queue.work_order.lease_expired",
        "acme",
    )
    assert record.subjects == {"work_order": str(order_id), "queue": "emails"}
    assert (record.correlation_id, record.trace_id) == (
        "corr-1",
        "0af7651916cd43dd8448eb211c80319c",
    )
    assert record.attributes["attempt"] == "2" and len(record.attributes["reason"]) == 256
    assert record.attributes["timeout_kind"] == "HEARTBEAT"
    assert (record.attributes["failure_type"], record.attributes["failure_retryable"]) == (
        "timeout",
        "true",
    )
    assert "secret" not in str(record.attributes)  # failure messages stay in the queue


def test_in_order_holds_back_an_orders_records_behind_one_held_elsewhere() -> None:
    a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()

    def row(order: uuid.UUID, seq: int) -> SimpleNamespace:
        return SimpleNamespace(work_order_id=order, seq=seq)

    claimed = [row(a, 3), row(b, 4), row(a, 6), row(c, 7), row(b, 9)]
    # a: seq 1 is undelivered and not ours (another relay holds it): all of a waits.
    # b: everything undelivered is ours. c: seq 8 is someone else's but comes later.
    undelivered = [(a, 1), (a, 3), (b, 4), (a, 6), (c, 7), (c, 8), (b, 9)]
    assert [(r.work_order_id, r.seq) for r in in_order(claimed, undelivered)] == [
        (b, 4),
        (c, 7),
        (b, 9),
    ]
    # A gap inside the claim: b's seq 5 is held elsewhere, so b's 9 must wait.
    undelivered = [(a, 3), (b, 4), (b, 5), (a, 6), (c, 7), (b, 9)]
    assert [r.seq for r in in_order(claimed, undelivered)] == [3, 4, 6, 7]


def test_the_platform_dials_its_own_server_on_loopback_when_bound_to_every_interface() -> None:
    assert local_address("0.0.0.0:50051", 50051) == "127.0.0.1:50051"
    assert local_address("[::]:0", 4321) == "127.0.0.1:4321"
    assert local_address("10.0.0.7:0", 4321) == "10.0.0.7:4321"


def test_journal_address_is_optional_but_must_be_host_port() -> None:
    assert load(CoreSettings).journal_address == ""
    assert load(CoreSettings, journal_address="events:50051").journal_address == "events:50051"
    with pytest.raises(ConfigurationError, match="CONVEYOR_JOURNAL_ADDRESS"):
        load(CoreSettings, journal_address="events")
