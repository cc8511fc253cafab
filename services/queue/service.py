"""Wiring of the work-order-queue service: engine, store, servicer, lifecycle."""

from __future__ import annotations

import logging

from conveyor.queue.v1 import service_pb2_grpc
from conveyor_core import db, migrations
from conveyor_core.clock import Clock, SystemClock
from conveyor_core.coordination import Coordination
from conveyor_core.gauges import SnapshotGauges
from conveyor_core.grpc import ServiceRegistration
from conveyor_core.outbox import JournalDelivery, OutboxNotifier, OutboxRelay, RelaySettings
from conveyor_core.pagination import PageTokens
from conveyor_core.settings import CoreSettings, load
from conveyor_queue import metrics as queue_metrics
from conveyor_queue.api.access import ACCESS
from conveyor_queue.api.servicer import SERVICE_NAME, WorkOrderQueueServicer
from conveyor_queue.engine import QueueEngine
from conveyor_queue.migrations import MIGRATIONS
from conveyor_queue.settings import QueueSettings
from conveyor_queue.store.gauges import queue_snapshot
from conveyor_queue.store.outbox import OUTBOX_CHANNEL, NotifyingWorkOrderStore, SqlQueueOutbox
from conveyor_queue.store.sql import SqlWorkOrderStore

log = logging.getLogger(__name__)


class QueueService:
    """The queue as a unit a process can host: start() migrates and starts the sweeper.

    When a journal is reachable (`CONVEYOR_JOURNAL_ADDRESS`, or the event store
    hosted in the same process: the Platform then calls `attach_journal`), an
    outbox relay journals every state change of every order (store/outbox.py).
    """

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
        self.coordination = coordination
        self.database_url = core.database_url_for(self.name)
        self.engine_db = db.create_engine(self.database_url, core)
        self.outbox_notifier = OutboxNotifier(
            coordination, OUTBOX_CHANNEL, min_interval=self.settings.relay_wake_interval_seconds
        )
        self.store = NotifyingWorkOrderStore(
            SqlWorkOrderStore(
                self.engine_db,
                self.settings.config_cache_seconds,
                # Kept out of the pool per plan mode (two): at most half of it in all.
                min(self.settings.hot_connections, core.db_pool_size // 4),
                self.settings.hot_connection_seconds,
            ),
            self.outbox_notifier,
        )
        self.engine = QueueEngine(self.store, coordination, self.settings, clock or SystemClock())
        self.servicer = WorkOrderQueueServicer(self.engine, PageTokens(core.page_token_secret))
        self.outbox = SqlQueueOutbox(self.engine_db, clock)
        self.journal = JournalDelivery(
            self.outbox, coordination, core, RelaySettings.of(self.settings), name="queue"
        )
        self.gauges = SnapshotGauges(
            "queue",
            lambda: queue_snapshot(
                self.engine_db, self.engine.clock.now(), self.settings.metrics_max_queues
            ),
            self.settings.metrics_refresh_seconds,
            self.settings.metrics_query_timeout_seconds,
        )
        self._started = False

    def registrations(self) -> list[ServiceRegistration]:
        return [
            ServiceRegistration.of(
                SERVICE_NAME,
                service_pb2_grpc.add_WorkOrderQueueServiceServicer_to_server,
                self.servicer,
                ACCESS,
            )
        ]

    async def start(self) -> None:
        if self._started:
            return
        await migrations.ensure_schema(self.engine_db, MIGRATIONS, apply=self.core.migrate_on_start)
        await self.engine.start()
        self.gauges.start()
        queue_metrics.announce()
        if self.core.journal_address:
            await self.attach_journal(self.core.journal_address)
        self._started = True
        log.info("queue service started on %s", db.redacted(self.database_url))

    @property
    def relay(self) -> OutboxRelay | None:
        """The running journal relay, if any."""
        return self.journal.relay

    async def attach_journal(self, address: str) -> None:
        """Start the outbox relay to the JournalService at `address`; idempotent."""
        self.outbox_notifier.enabled = True
        await self.journal.start(address)

    async def self_check(self) -> None:
        """Raises when the database is unreachable or not migrated."""
        await migrations.require_head(self.engine_db, MIGRATIONS)

    async def drain(self) -> None:
        """Stop relaying to the journal before the server stops (shutdown); what is not
        delivered yet stays in the outbox for the next start or another replica."""
        await self.journal.stop(flush=True)

    async def stop(self) -> None:
        await self.gauges.stop()
        await self.drain()
        await self.outbox_notifier.close()
        await self.engine.stop()
        await self.store.close()
        await self.engine_db.dispose()
        self._started = False


def build(
    core: CoreSettings, coordination: Coordination, clock: Clock | None = None
) -> QueueService:
    return QueueService(core, coordination, clock=clock)
