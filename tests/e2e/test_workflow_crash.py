"""kill -9 of an executor in each consumer phase, and a second executor taking over.

The platform (queue, event store, scheduler) runs here; executors are worker
processes hosting tests.helpers.workflow_app on the same executor database. The
first one exits as kill -9 would (CONVEYOR_EXECUTOR_FAULT_EXIT_AFTER_PHASE: no
cleanup, no report) right after a charge run durably enters a phase; its lease
expires and two other executors take over. What must hold, in every phase: the
order is charged exactly once (the in-flight mutation is never silently re-run:
reconcile looked it up), its event consumed once, the consumer's state version
written once, the receipt published once, and no two sessions of the workflow
overlapped in time.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from conveyor.events.v1 import messages_pb2 as events_pb
from conveyor.events.v1 import service_pb2 as events_rpc
from conveyor.events.v1 import service_pb2_grpc as events_grpc
from conveyor.executor.v1 import workflow_pb2 as P
from conveyor.executor.v1 import workflow_pb2_grpc as wf_grpc
from conveyor.scheduler.v1 import service_pb2 as sched_rpc
from conveyor.scheduler.v1 import service_pb2_grpc as sched_grpc
from conveyor_core.fake_shop import FakeShop
from conveyor_core.grpc import create_channel
from conveyor_core.runtime import Platform
from conveyor_core.settings import CoreSettings
from tests.e2e.test_cli import cli_env, free_port
from tests.e2e.test_cli import conveyor as conveyor_cli
from tests.helpers.e2e import eventually

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.helpers.workflow_app:app"


def _worker_env(core: CoreSettings, shop: FakeShop, **extra: str) -> dict[str, str]:
    settings = {"CONVEYOR_DATA_DIR": str(core.data_dir)}
    if core.database_url:
        settings["CONVEYOR_DATABASE_URL"] = core.database_url
        settings["CONVEYOR_REDIS_URL"] = core.redis_url
        settings["CONVEYOR_REDIS_KEY_PREFIX"] = core.redis_key_prefix
    return {
        **cli_env(**settings),
        "PYTHONPATH": str(ROOT),
        "CONVEYOR_EXAMPLE_SHOP_URL": shop.url,
        "CONVEYOR_EXECUTOR_LEASE_WAIT_SECONDS": "0.5",
        "CONVEYOR_EXECUTOR_LEASE_SECONDS": "3",
        "CONVEYOR_EXECUTOR_HEARTBEAT_INTERVAL_SECONDS": "0.5",
        **extra,
    }


@pytest.fixture
async def platform(core: CoreSettings) -> AsyncIterator[str]:
    platform = Platform(core, ["queue", "events", "scheduler"])
    port = await platform.start("127.0.0.1:0")
    yield f"127.0.0.1:{port}"
    await platform.stop(grace=1)


@pytest.fixture
def shop() -> AsyncIterator[FakeShop]:
    fake = FakeShop().start()
    yield fake  # type: ignore[misc]
    fake.stop()


class _Worker:
    """A worker process whose output is read as it comes: a pipe nobody reads fills up
    (64 KiB) and then blocks the worker's logging, which freezes its event loop."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.log = bytearray()
        self._readers = [
            asyncio.create_task(self._read(stream))
            for stream in (process.stdout, process.stderr)
            if stream is not None
        ]

    async def _read(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(65536):
            self.log += chunk
            del self.log[:-200_000]  # keep the end

    def alive(self) -> None:
        """Fail at once, with its log, when the worker has exited (a start-up failure)."""
        if self.process.returncode is not None:
            raise AssertionError(
                f"a worker exited with {self.process.returncode}: "
                f"{self.log.decode(errors='replace')[-3000:]}"
            )

    async def stop(self) -> str:
        """SIGTERM and wait; returns the end of what the process wrote (its log)."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(self.process.wait(), 60)
        await asyncio.wait_for(asyncio.gather(*self._readers), 10)
        return self.log.decode(errors="replace")


async def _worker(platform: str, core: CoreSettings, shop: FakeShop, port: int) -> _Worker:
    return _Worker(
        await conveyor_cli(
            "worker",
            APP,
            "--address",
            platform,
            "--listen",
            f"127.0.0.1:{port}",
            env=_worker_env(core, shop),
        )
    )


@pytest.mark.parametrize("phase", ["PREPARED", "MUTATING", "MUTATED", "EMITTING"])
async def test_an_executor_killed_in_a_consumer_phase_is_taken_over_without_double_effects(
    core: CoreSettings, platform: str, shop: FakeShop, phase: str
) -> None:
    order = shop.add_order("ada", 42)
    doomed = await conveyor_cli(
        "worker",
        APP,
        "--address",
        platform,
        env=_worker_env(
            core,
            shop,
            CONVEYOR_EXECUTOR_FAULT_EXIT_AFTER_PHASE=phase,
            # The charge run's phase, not the first of any hosted workflow's runs: on a
            # loaded machine the `tight` consumer's run (its 30 s debounce over) reached
            # MUTATING first, the worker exited before the charge, and the takers charged
            # once with no reconcile (reconciled == "").
            CONVEYOR_EXECUTOR_FAULT_EXIT_HANDLER="charge_order",
        ),
    )
    # Registration fires the producer's first slot: the order is polled and charged.
    _, stderr = await asyncio.wait_for(doomed.communicate(), 90)
    assert doomed.returncode == 137, stderr.decode()[-2000:]
    ports = [free_port() for _ in range(2)]
    takers = [await _worker(platform, core, shop, port) for port in ports]
    try:
        await _check(platform, shop, order, phase)
        await _check_ledger(f"127.0.0.1:{ports[0]}", phase)
    finally:
        for port, taker in zip(ports, takers, strict=True):
            log = await taker.stop()
            print(f"--- worker 127.0.0.1:{port}, the end of its log ---\n{log[-6000:]}")


async def _check_ledger(worker: str, phase: str) -> None:
    async with create_channel(worker) as channel:
        stub = wf_grpc.WorkflowServiceStub(channel)

        async def committed() -> list[P.HandlerRun] | None:
            # The receipt is out once the commit answered; COMMITTED is written right after.
            try:
                reply = await stub.ListHandlerRuns(
                    P.ListHandlerRunsRequest(
                        parent="namespaces/wf", workflow="shop", page_size=1000
                    )
                )
            except grpc.aio.AioRpcError:  # the worker may still be starting
                return None
            runs = reply.handler_runs
            charges = [r for r in runs if r.handler == "charge_order" and r.events]
            done = [r.phase for r in charges] == [P.HANDLER_PHASE_COMMITTED]
            return charges if done else None

        charges = await eventually(committed, "the charge run COMMITTED, alone", 30)
        detail = await stub.GetHandlerRun(P.GetHandlerRunRequest(name=charges[0].name))
        mutation = detail.mutation
        assert mutation.state == P.MUTATION_STATE_APPLIED
        if phase == "MUTATING":
            # Killed with the call in flight, before it left: indeterminate, then reconcile
            # found no charge (failed), so mutate ran a second time, once.
            assert mutation.reconciled == "failed" and mutation.attempts == 2
        else:
            assert mutation.reconciled == "" and mutation.attempts == 1
        sessions = (
            await stub.ListSessions(
                P.ListSessionsRequest(parent="namespaces/wf/workflows/shop", page_size=1000)
            )
        ).sessions
        spans = sorted(
            (s.start_time.ToNanoseconds(), s.end_time.ToNanoseconds() or 2**63)
            for s in sessions
            if s.state != P.SESSION_STATE_RUNNING
        )
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert end <= start, "two sessions of one workflow overlapped"


async def _check(platform: str, shop: FakeShop, order: dict[str, object], phase: str) -> None:
    async with create_channel(platform) as channel:
        events = events_grpc.EventStoreServiceStub(channel)

        async def receipt() -> events_pb.Event | None:
            try:
                reply = await events.ListEvents(
                    events_rpc.ListEventsRequest(parent="namespaces/wf/topics/receipts")
                )
            except Exception:
                return None
            return reply.events[0] if reply.events else None

        published = await eventually(receipt, f"the receipt after a kill at {phase}", 90)
        assert published.message_id == f"receipt-{order['id']}"
        orders = await events.ListEvents(
            events_rpc.ListEventsRequest(parent="namespaces/wf/topics/orders")
        )
        assert [e.status for e in orders.events] == [events_pb.EVENT_STATUS_CONSUMED]
        state = await events.GetState(
            events_rpc.GetStateRequest(name="namespaces/wf/handlers/shop.charge-order/state")
        )
        assert state.state.version == 1, "the consumer's state written once"
        assert b'"charged":1' in state.state.data.data
        receipts = await events.ListEvents(
            events_rpc.ListEventsRequest(parent="namespaces/wf/topics/receipts")
        )
        assert len(receipts.events) == 1
    assert len(shop.charges_of(order["id"])) == 1, f"charged once after a kill at {phase}"


async def test_two_executors_and_many_triggers_never_run_two_sessions_at_once(
    core: CoreSettings, platform: str, shop: FakeShop
) -> None:
    for index in range(6):
        shop.add_order(f"customer-{index}", index + 1)
    ports = [free_port() for _ in range(2)]
    workers = [await _worker(platform, core, shop, port) for port in ports]
    try:
        async with create_channel(platform) as channel:
            scheduler = sched_grpc.SchedulerServiceStub(channel)
            name = "namespaces/wf/jobs/wf-shop-poll-orders/schedules/wf-shop-poll-orders"

            async def fired() -> bool:
                for worker in workers:
                    worker.alive()
                try:
                    await scheduler.TriggerSchedule(sched_rpc.TriggerScheduleRequest(name=name))
                except grpc.aio.AioRpcError:
                    return False
                return True

            # The first waits for the workers to start and register the schedule.
            await eventually(fired, "the first trigger of the producer", 90)
            for _ in range(7):  # triggers pile up behind the running session
                await eventually(fired, "a trigger of the producer", 30)
        await eventually(lambda: _all_charged(shop, 6), "six orders charged", 90)
        async with create_channel(f"127.0.0.1:{ports[0]}") as channel:
            stub = wf_grpc.WorkflowServiceStub(channel)

            async def settled() -> list[P.Session] | None:
                try:
                    reply = await stub.ListSessions(
                        P.ListSessionsRequest(parent="namespaces/wf/workflows/shop", page_size=1000)
                    )
                except grpc.aio.AioRpcError:  # the worker may still be starting
                    return None
                sessions = reply.sessions
                last_seen[:] = sessions
                done = len(sessions) >= 2 and all(
                    s.state != P.SESSION_STATE_RUNNING for s in sessions
                )
                return list(sessions) if done else None

            last_seen: list[P.Session] = []
            try:
                sessions = await eventually(settled, "the sessions ended", 90)
            except AssertionError as failed:  # say which session is stuck, and where
                states = [(s.name, P.SessionState.Name(s.state), s.summary) for s in last_seen]
                raise AssertionError(f"{failed}; sessions: {states}") from None
        spans = sorted((s.start_time.ToNanoseconds(), s.end_time.ToNanoseconds()) for s in sessions)
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert end <= start, "two sessions of one workflow overlapped"
        assert all(len(shop.charges_of(i)) == 1 for i in range(1, 7)), "each order charged once"
    finally:
        for port, worker in zip(ports, workers, strict=True):
            log = await worker.stop()
            print(f"--- worker 127.0.0.1:{port}, the end of its log ---\n{log[-6000:]}")


async def _all_charged(shop: FakeShop, count: int) -> bool:
    return len(shop.charges) >= count
