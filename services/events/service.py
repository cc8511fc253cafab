"""Wiring of the event-store service: engine, store, servicers, lifecycle."""

from __future__ import annotations

import logging
from datetime import timedelta

from conveyor.events.v1 import service_pb2_grpc
from conveyor_core import db, migrations
from conveyor_core.clock import Clock, SystemClock
from conveyor_core.coordination import Coordination
from conveyor_core.gauges import SnapshotGauges
from conveyor_core.grpc import ServiceRegistration
from conveyor_core.pagination import PageTokens
from conveyor_core.settings import CoreSettings, load
from conveyor_events import metrics as events_metrics
from conveyor_events.api.access import EVENT_STORE_ACCESS
from conveyor_events.api.journal_servicer import journal_registration
from conveyor_events.api.servicer import SERVICE_NAME as STORE_SERVICE_NAME
from conveyor_events.api.servicer import EventStoreServicer
from conveyor_events.engine import EventStoreEngine
from conveyor_events.journal_engine import build_journal_engine
from conveyor_events.migrations import MIGRATIONS
from conveyor_events.settings import EventStoreSettings
from conveyor_events.store.gauges import events_snapshot
from conveyor_events.store.sql import SqlEventStore

log = logging.getLogger(__name__)


class EventStoreService:
    """The event store as a unit a process can host: topics, events, state (and the journal)."""

    name = "events"
    migrations = MIGRATIONS

    def __init__(
        self,
        core: CoreSettings,
        coordination: Coordination,
        settings: EventStoreSettings | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.core = core
        self.settings = settings or load(EventStoreSettings)
        self.clock = clock or SystemClock()
        self.coordination = coordination
        self.database_url = core.database_url_for(self.name)
        self.engine_db = db.create_engine(self.database_url, core)
        self.page_tokens = PageTokens(core.page_token_secret)
        self.store = SqlEventStore(self.engine_db)
        self.engine = EventStoreEngine(self.store, coordination, self.settings, self.clock)
        self.servicer = EventStoreServicer(self.engine, self.page_tokens)
        self.journal = build_journal_engine(self.engine_db, coordination, self.settings, self.clock)
        self.gauges = SnapshotGauges(
            "events",
            lambda: events_snapshot(
                self.engine_db,
                self.clock.now() - timedelta(seconds=self.settings.stale_after_seconds),
                self.settings.metrics_max_topics,
            ),
            self.settings.metrics_refresh_seconds,
            self.settings.metrics_query_timeout_seconds,
        )
        self._started = False

    def registrations(self) -> list[ServiceRegistration]:
        """One line per gRPC service hosted here."""
        return [
            ServiceRegistration.of(
                STORE_SERVICE_NAME,
                service_pb2_grpc.add_EventStoreServiceServicer_to_server,
                self.servicer,
                EVENT_STORE_ACCESS,
            ),
            journal_registration(self.journal),
        ]

    async def start(self) -> None:
        if self._started:
            return
        await migrations.ensure_schema(self.engine_db, MIGRATIONS, apply=self.core.migrate_on_start)
        self.gauges.start()
        events_metrics.announce()
        self._started = True
        log.info("event store started on %s", db.redacted(self.database_url))

    async def self_check(self) -> None:
        """Raises when the database is unreachable or not migrated."""
        await migrations.require_head(self.engine_db, MIGRATIONS)

    async def stop(self) -> None:
        await self.gauges.stop()
        await self.engine_db.dispose()
        self._started = False


def build(
    core: CoreSettings, coordination: Coordination, clock: Clock | None = None
) -> EventStoreService:
    return EventStoreService(core, coordination, clock=clock)
