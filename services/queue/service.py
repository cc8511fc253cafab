"""Wiring of the work-order-queue service: engine, store, servicer, lifecycle."""

from __future__ import annotations

import logging

from conveyor.queue.v1 import service_pb2_grpc
from conveyor_core import db, migrations
from conveyor_core.clock import Clock, SystemClock
from conveyor_core.coordination import Coordination
from conveyor_core.grpc import ServiceRegistration
from conveyor_core.pagination import PageTokens
from conveyor_core.settings import CoreSettings, load
from conveyor_queue.api.servicer import SERVICE_NAME, WorkOrderQueueServicer
from conveyor_queue.engine import QueueEngine
from conveyor_queue.migrations import MIGRATIONS
from conveyor_queue.settings import QueueSettings
from conveyor_queue.store.sql import SqlWorkOrderStore

log = logging.getLogger(__name__)


class QueueService:
    """The queue as a unit a process can host: start() migrates and starts the sweeper."""

    name = "queue"
    migrations = MIGRATIONS

    def __init__(
        self,
        core: CoreSettings,
        coordination: Coordination,
        settings: QueueSettings | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.core = core
        self.settings = settings or load(QueueSettings)
        self.database_url = core.database_url_for(self.name)
        self.engine_db = db.create_engine(self.database_url, core)
        self.store = SqlWorkOrderStore(self.engine_db)
        self.engine = QueueEngine(self.store, coordination, self.settings, clock or SystemClock())
        self.servicer = WorkOrderQueueServicer(self.engine, PageTokens(core.page_token_secret))
        self._started = False

    def registrations(self) -> list[ServiceRegistration]:
        return [
            ServiceRegistration(
                SERVICE_NAME,
                lambda server: service_pb2_grpc.add_WorkOrderQueueServiceServicer_to_server(
                    self.servicer, server
                ),
            )
        ]

    async def start(self) -> None:
        if self._started:
            return
        if self.core.migrate_on_start:
            await migrations.upgrade(self.engine_db, MIGRATIONS)
        await self.engine.start()
        self._started = True
        log.info("queue service started on %s", db.redacted(self.database_url))

    async def self_check(self) -> None:
        """Raises when the database is unreachable or not migrated."""
        current = await migrations.current_revision(self.engine_db, MIGRATIONS)
        if current is None:
            raise RuntimeError("queue schema is not migrated (run `conveyor migrate queue`)")

    async def stop(self) -> None:
        await self.engine.stop()
        await self.engine_db.dispose()
        self._started = False


def build(
    core: CoreSettings, coordination: Coordination, clock: Clock | None = None
) -> QueueService:
    return QueueService(core, coordination, clock=clock)
