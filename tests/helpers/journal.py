"""Running the real JournalService for tests, on SQLite + in-process or PostgreSQL + Redis.

* `JournalHost` hosts the journal alone as a Platform service (what the event
  store's service.py adds with one registration); `build_journal_host` is its
  factory for `conveyor_core.runtime.SERVICES`.
* `JournalEnv` serves it on a real gRPC server (`create_server`, port 0) and
  calls it through a real channel.
* `queue_with_journal` (import it into a test module by assignment) runs the
  queue and the journal in one Platform on the suite-wide `core` fixture
  (tests/conftest.py): both backends.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from conveyor.events.v1 import messages_pb2 as pb
from conveyor.events.v1 import service_pb2 as rpc
from conveyor.events.v1 import service_pb2_grpc
from conveyor.queue.v1 import service_pb2_grpc as queue_grpc
from conveyor_core import db, migrations
from conveyor_core.clock import Clock
from conveyor_core.coordination import Coordination
from conveyor_core.grpc import GrpcServer, ServiceRegistration, create_channel, create_server
from conveyor_core.runtime import SERVICES, Platform, coordination_from
from conveyor_core.settings import CoreSettings
from conveyor_events.api.journal_servicer import journal_registration
from conveyor_events.journal_engine import JournalEngine, build_journal_engine
from conveyor_events.migrations import MIGRATIONS as EVENTS_MIGRATIONS
from conveyor_events.settings import EventStoreSettings
from conveyor_queue.service import QueueService
from tests.helpers.polling import eventually as eventually  # the suite's one poll loop
from tests.helpers.queue import QueueEnv, wall_clock

NAMESPACE = "test"
#: Name of the journal-only hosted service in `conveyor_core.runtime.SERVICES` during tests.
JOURNAL_TEST_SERVICE = "journal-test"

# Template databases by purpose, made once per session (dropped with the others at the end).


class JournalHost:
    """The JournalService alone, on the event store's database, as a hosted service."""

    name = "journal"

    def __init__(
        self,
        core: CoreSettings,
        coordination: Coordination,
        settings: EventStoreSettings | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.core = core
        self.settings = settings or EventStoreSettings()
        self.database = db.create_engine(core.database_url_for("events"), core)
        self.engine: JournalEngine = build_journal_engine(
            self.database, coordination, self.settings, clock
        )

    def registrations(self) -> list[ServiceRegistration]:
        return [journal_registration(self.engine)]

    async def start(self) -> None:
        await migrations.upgrade(self.database, EVENTS_MIGRATIONS)

    async def self_check(self) -> None:
        if await migrations.current_revision(self.database, EVENTS_MIGRATIONS) is None:
            raise RuntimeError("events schema is not migrated")

    async def stop(self) -> None:
        await self.database.dispose()


def build_journal_host(
    core: CoreSettings, coordination: Coordination, clock: Clock | None = None
) -> JournalHost:
    return JournalHost(core, coordination, clock=clock)


def record(
    record_id: str,
    type: str = "test.thing.happened",
    namespace: str = NAMESPACE,
    subjects: Mapping[str, str] | None = None,
    correlation_id: str = "",
    attributes: Mapping[str, str] | None = None,
    **fields: Any,
) -> pb.JournalRecord:
    return pb.JournalRecord(
        id=record_id,
        type=type,
        namespace=namespace,
        subjects=dict(subjects or {}),
        correlation_id=correlation_id,
        attributes=dict(attributes or {}),
        **fields,
    )


class JournalEnv:
    """A JournalService on a real server and database, and a client stub for it."""

    def __init__(self, core: CoreSettings, settings: EventStoreSettings | None = None) -> None:
        self.core = core
        self.settings = settings or EventStoreSettings()
        self.coordination = coordination_from(core)
        self.host = JournalHost(core, self.coordination, self.settings)
        self.server: GrpcServer | None = None
        self.address = ""

    async def start(self) -> JournalEnv:
        await self.coordination.start()
        await self.host.start()
        self.server, port = await create_server("127.0.0.1:0", self.host.registrations(), self.core)
        await self.server.start()
        self.address = f"127.0.0.1:{port}"
        self.channel = create_channel(self.address)
        self.stub = service_pb2_grpc.JournalServiceStub(self.channel)
        return self

    async def stop(self) -> None:
        await self.channel.close()
        if self.server is not None:
            await self.server.stop(0)
        await self.host.stop()
        await self.coordination.stop()

    async def outage(self) -> None:
        """Stop serving (the database stays); `recover()` serves again on the same port."""
        assert self.server is not None
        await self.server.stop(0)

    async def recover(self) -> None:
        self.server, _ = await create_server(self.address, self.host.registrations(), self.core)
        await self.server.start()

    @property
    def engine(self) -> JournalEngine:
        return self.host.engine

    async def append(self, *records: pb.JournalRecord) -> list[int]:
        request = rpc.AppendJournalRecordsRequest(records=list(records))
        return list((await self.stub.AppendJournalRecords(request)).positions)

    async def read(
        self, after: int = 0, page_size: int = 0, **filter_fields: str
    ) -> rpc.ReadJournalResponse:
        return await self.stub.ReadJournal(
            rpc.ReadJournalRequest(
                after_position=after,
                filter=rpc.JournalFilter(**filter_fields),
                page_size=page_size,
            )
        )

    async def read_all(self, page_size: int = 0, **filter_fields: str) -> list[pb.JournalRecord]:
        return await read_journal(self.stub, page_size, **filter_fields)


async def read_journal(
    stub: service_pb2_grpc.JournalServiceStub, page_size: int = 0, **filter_fields: str
) -> list[pb.JournalRecord]:
    """Every matching record, paging by next_position until a page comes back empty."""
    out: list[pb.JournalRecord] = []
    after = 0
    while True:
        page = await stub.ReadJournal(
            rpc.ReadJournalRequest(
                after_position=after,
                filter=rpc.JournalFilter(**filter_fields),
                page_size=page_size,
            )
        )
        out += page.records
        if not page.records:
            return out
        after = page.next_position


@dataclass
class QueueWithJournalEnv(QueueEnv):
    """The queue and the journal on one Platform (the embedded default's wiring), with stubs.

    The Platform sees the JournalService among its registrations and points
    the queue's outbox relay at its own address. Needs `JOURNAL_TEST_SERVICE`
    in `conveyor_core.runtime.SERVICES` (the `queue_with_journal` fixture).
    """

    async def start(self) -> QueueWithJournalEnv:
        self.platform = Platform(
            self.core,
            ["queue", JOURNAL_TEST_SERVICE],
            coordination=self.coordination,
            clock=self.clock,
        )
        port = await self.platform.start("127.0.0.1:0")
        self._channel = create_channel(f"127.0.0.1:{port}")
        self.stub = queue_grpc.WorkOrderQueueServiceStub(self._channel)
        self.journal = service_pb2_grpc.JournalServiceStub(self._channel)
        return self

    @property
    def queue_service(self) -> QueueService:
        assert self.platform is not None
        service: QueueService = self.platform.service("queue")
        return service


@pytest.fixture
async def queue_with_journal(
    core: CoreSettings, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[QueueWithJournalEnv]:
    monkeypatch.setitem(SERVICES, JOURNAL_TEST_SERVICE, f"{__name__}:build_journal_host")
    env = await QueueWithJournalEnv(core, wall_clock()).start()
    yield env
    await env.stop()


def positions_of(records: Sequence[pb.JournalRecord]) -> list[int]:
    return [r.position for r in records]


async def until_stable(
    value: Callable[[], object], quiet: float = 0.5, limit_seconds: float = 10.0
) -> None:
    """Poll until `value()` has not changed for `quiet` seconds; fail after the limit."""
    loop = asyncio.get_running_loop()
    last, since = value(), loop.time()
    async with asyncio.timeout(limit_seconds):
        while True:
            await asyncio.sleep(0.02)
            current = value()
            if current != last:
                last, since = current, loop.time()
            elif loop.time() - since >= quiet:
                return
