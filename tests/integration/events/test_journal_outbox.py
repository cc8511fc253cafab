"""The queue's outbox relay journals every work-order transition exactly once, in order.

Real parts throughout: the queue and the journal on one Platform (SQLite +
in-process, or PostgreSQL + Redis), the relay delivering over gRPC.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import pytest
from opentelemetry import trace

from conveyor.common.v1 import types_pb2
from conveyor.events.v1 import messages_pb2 as pb
from conveyor.queue.v1 import messages_pb2 as m
from conveyor.queue.v1 import service_pb2 as qrpc
from conveyor_core.context import correlation_scope
from conveyor_core.outbox import OutboxBatch, OutboxRelay, OutboxSource, trace_id_of
from conveyor_core.settings import CoreSettings
from conveyor_core.telemetry import configure_tracing
from conveyor_queue.service import QueueService
from tests.helpers import journal as fixtures
from tests.helpers.journal import (
    JournalEnv,
    QueueWithJournalEnv,
    eventually,
    read_journal,
)
from tests.helpers.queue import QueueEnv, queue_name, spec, wall_clock

queue_with_journal = fixtures.queue_with_journal

T = "queue.work_order."


@pytest.fixture(scope="module", autouse=True)
def tracing() -> None:
    configure_tracing("conveyor-test", CoreSettings())  # so submits carry a traceparent


@dataclass
class CrashBeforeMark:
    """An outbox source whose relay "dies" after the append, before marking the rows."""

    inner: OutboxSource
    crashes: int = 0
    channel: str = field(init=False)

    def __post_init__(self) -> None:
        self.channel = self.inner.channel

    @contextlib.asynccontextmanager
    async def claim(self, limit: int) -> AsyncIterator[OutboxBatch]:
        async with self.inner.claim(limit) as batch:
            yield _Unmarkable(batch, self)


@dataclass
class _Unmarkable:
    batch: OutboxBatch
    source: CrashBeforeMark

    @property
    def records(self) -> Sequence[object]:
        return self.batch.records

    @property
    def claimed(self) -> int:
        return self.batch.claimed

    @property
    def unreadable(self) -> Sequence[tuple[str, BaseException]]:
        return self.batch.unreadable

    async def mark_delivered(self) -> None:
        self.source.crashes += 1
        raise RuntimeError("simulated crash between append and mark-delivered")


async def submit(env: QueueEnv, label: str, **fields: object) -> m.WorkOrder:
    """Submit to queue q-<label> under correlation id corr-<label>, inside a client span."""
    with (
        correlation_scope(f"corr-{label}"),
        trace.get_tracer("test").start_as_current_span("client.submit"),
    ):
        response = await env.stub.SubmitWorkOrder(
            qrpc.SubmitWorkOrderRequest(parent=queue_name(f"q-{label}"), work_order=spec(**fields))
        )
    return response.work_order


async def lease_one(env: QueueEnv, label: str, lease: float | None = None) -> qrpc.LeasedWorkOrder:
    [leased] = await env.lease(queues=(f"q-{label}",), lease=lease)
    return leased


async def journal_of(env: QueueWithJournalEnv, order: m.WorkOrder) -> list[pb.JournalRecord]:
    return await read_journal(env.journal, subject=order.id, type_prefix=T)


async def _no_backlog(queue: QueueService) -> bool:
    return await queue.outbox.undelivered_count() == 0


async def history_of(env: QueueEnv, order: m.WorkOrder) -> list[m.WorkOrderEvent]:
    request = qrpc.ListWorkOrderEventsRequest(parent=order.name, page_size=100)
    return list((await env.stub.ListWorkOrderEvents(request)).events)


async def test_every_transition_is_journaled_once_in_order_despite_relay_restarts(
    queue_with_journal: QueueWithJournalEnv,
) -> None:
    env, queue = queue_with_journal, queue_with_journal.queue_service
    assert queue.relay is not None and queue.relay.running  # the Platform attached it
    one_attempt = types_pb2.RetryPolicy(maximum_attempts=1)
    orders = {
        label: await submit(env, label, **fields)
        for label, fields in [
            ("a", {}),
            ("b", {}),
            ("c", {}),
            ("d", {}),
            ("e", {"retry_policy": one_attempt}),
            ("f", {}),
            ("g", {}),
        ]
    }
    await eventually(lambda: queue.relay.stats.delivered >= 7)

    # The relay is down while orders move on.
    await queue.relay.stop()
    await env.complete(await lease_one(env, "a"))
    await env.fail(await lease_one(env, "b"))  # retryable: back to QUEUED after backoff
    await env.fail(await lease_one(env, "c"), retryable=False)
    await env.stub.CancelWorkOrder(qrpc.CancelWorkOrderRequest(name=orders["d"].name))

    # It comes back, appends, and "crashes" before marking anything delivered.
    crashing = CrashBeforeMark(queue.outbox)
    queue.relay.source = crashing
    await queue.relay.start()
    await eventually(lambda: crashing.crashes >= 1)
    await queue.relay.stop()
    assert len(await journal_of(env, orders["a"])) == 3  # the append happened...
    assert await queue.outbox.undelivered_count() > 0  # ...the mark did not

    # Restarted for real: the same rows go again, and change nothing in the journal.
    queue.relay.source = queue.outbox
    await queue.relay.start()
    env.clock.advance(10)  # b's backoff is over
    await env.complete(await lease_one(env, "b"))
    await env.fail(await lease_one(env, "e"))  # retryable, but its only attempt: DEAD
    await env.stub.RedriveWorkOrders(
        qrpc.RedriveWorkOrdersRequest(parent=queue_name("q-e"), reason="fixed", requested_by="ops")
    )
    await lease_one(env, "f", lease=1)
    env.clock.advance(2)
    assert await env.sweep() == 1  # f's lease expired: a retry after backoff
    env.clock.advance(10)
    await env.complete(await lease_one(env, "f"))
    leased_g = await lease_one(env, "g")
    await env.stub.CancelWorkOrder(qrpc.CancelWorkOrderRequest(name=orders["g"].name))
    await env.fail(leased_g)  # cancel requested while running: CANCELLED

    expected = {
        "a": ["queued", "leased", "succeeded"],
        "b": ["queued", "leased", "retry_scheduled", "leased", "succeeded"],
        "c": ["queued", "leased", "failed"],
        "d": ["queued", "cancelled"],
        "e": ["queued", "leased", "dead", "redriven"],
        "f": ["queued", "leased", "lease_expired", "leased", "succeeded"],
        "g": ["queued", "leased", "cancel_requested", "cancelled"],
    }
    total = sum(len(types) for types in expected.values())
    await eventually(lambda: queue.relay.stats.delivered >= total)
    await eventually(lambda: _no_backlog(queue))

    everything = await read_journal(env.journal, type_prefix=T)
    assert len(everything) == total == len({r.id for r in everything})  # exactly once
    for label, order in orders.items():
        records = await journal_of(env, order)
        assert [r.type.removeprefix(T) for r in records] == expected[label], label
        history = await history_of(env, order)
        assert [r.id for r in records] == [f"queue/{e.sequence}" for e in history]
        assert {r.correlation_id for r in records} == {f"corr-{label}"}
        assert {r.trace_id for r in records} == {trace_id_of(order.traceparent)} != {""}
        assert all(
            dict(r.subjects) == {"work_order": order.id, "queue": f"q-{label}"} for r in records
        )
        assert records[0].attributes["attempt"] == "0"
        assert all(r.attributes["attempt"] != "0" for r in records if r.type == T + "leased")
    [expired] = [r for r in await journal_of(env, orders["f"]) if r.type.endswith("expired")]
    assert expired.attributes["timeout_kind"] == "LEASE_EXPIRED"
    [failed] = [r for r in await journal_of(env, orders["c"]) if r.type.endswith("failed")]
    assert (failed.attributes["failure_type"], failed.attributes["failure_retryable"]) == (
        "network",
        "false",
    )


async def test_a_configured_journal_address_is_used_and_an_outage_is_retried(
    core: CoreSettings,
) -> None:
    journal = await JournalEnv(core).start()
    core = core.model_copy(update={"journal_address": journal.address})
    env = await QueueEnv(core, wall_clock()).start()
    try:
        queue: QueueService = env.platform.service("queue")  # type: ignore[union-attr]
        assert queue.relay is not None  # started by the service itself, from the setting
        order = await env.submit()
        await env.complete((await env.lease())[0])
        await eventually(lambda: queue.relay.stats.delivered == 3)
        assert [r.type for r in await journal.read_all(subject=order.id)] == [
            T + "queued",
            T + "leased",
            T + "succeeded",
        ]

        await journal.outage()
        later = [await env.submit(), await env.submit()]
        await eventually(lambda: queue.relay.stats.failures >= 1)  # it backs off and retries
        assert await queue.outbox.undelivered_count() == 2
        await journal.recover()
        await eventually(lambda: queue.relay.stats.delivered == 5)
        records = await journal.read_all(type_prefix=T)
        assert [r.subjects["work_order"] for r in records[3:]] == [o.id for o in later]
        assert len({r.id for r in records}) == len(records) == 5
    finally:
        await env.stop()
        await journal.stop()


async def test_relays_on_two_replicas_share_the_outbox_and_keep_each_orders_order(
    postgres_core: CoreSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVEYOR_QUEUE_RELAY_BATCH_SIZE", "5")  # many small, racing batches
    journal = await JournalEnv(postgres_core).start()
    core = postgres_core.model_copy(update={"journal_address": journal.address})
    replicas = [await QueueEnv(core, wall_clock()).start() for _ in range(2)]
    try:
        orders = [
            await replicas[i % 2].submit(queue="shared", data=str(i).encode()) for i in range(40)
        ]

        async def work(replica: QueueEnv) -> None:
            while leased := await replica.lease(queues=("shared",), n=3):
                for item in leased:
                    if int(item.work_order.spec.payload.data) % 3:
                        await replica.complete(item)
                    else:
                        await replica.fail(item, retryable=False)

        await asyncio.gather(*(work(replica) for replica in replicas))
        await eventually(lambda: _delivered(replicas) == 40 * 3)
        records = await journal.read_all(type_prefix=T)
        assert len(records) == len({r.id for r in records}) == 40 * 3
        for order in orders:
            history = await history_of(replicas[0], order)
            mine = [r.id for r in records if r.subjects["work_order"] == order.id]
            assert mine == [f"queue/{e.sequence}" for e in history]  # in the order it happened
        assert all(_relay(replica).stats.delivered for replica in replicas)
    finally:
        for replica in replicas:
            await replica.stop()
        await journal.stop()


def _relay(env: QueueEnv) -> OutboxRelay:
    relay = env.platform.service("queue").relay  # type: ignore[union-attr]
    assert relay is not None
    return relay


def _delivered(replicas: Sequence[QueueEnv]) -> int:
    return sum(_relay(replica).stats.delivered for replica in replicas)
