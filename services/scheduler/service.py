"""Wiring of the scheduler service: engine, store, servicer, leader election and its tasks.

Every replica serves the API. Once the queue's address is known
(`attach_peers`), each replica runs for leadership; the leader alone runs the
firing loop, the submit relay, the journal relay, the outcome tracker and
the on-event poller, and stops them all the moment it loses the lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING

from conveyor.scheduler.v1 import service_pb2_grpc
from conveyor_core import db, migrations
from conveyor_core.clock import Clock, SystemClock
from conveyor_core.coordination import Coordination, Lease
from conveyor_core.grpc import ServiceRegistration
from conveyor_core.metrics import announce
from conveyor_core.outbox import JournalDelivery, RelaySettings
from conveyor_core.pagination import PageTokens
from conveyor_core.settings import CoreSettings, load
from conveyor_core.tasks import cancel_and_wait
from conveyor_scheduler.api.access import ACCESS
from conveyor_scheduler.api.servicer import SERVICE_NAME, SchedulerServicer
from conveyor_scheduler.engine import SLOTS_SKIPPED, WAKE_CHANNEL, SchedulerEngine
from conveyor_scheduler.leader import LEADER_CHANGES, LeaderElection
from conveyor_scheduler.migrations import MIGRATIONS
from conveyor_scheduler.outcomes import OutcomeTracker
from conveyor_scheduler.peers import EventsClient, QueueClient
from conveyor_scheduler.relay import SubmitRelay
from conveyor_scheduler.settings import SchedulerSettings
from conveyor_scheduler.store.base import Delivery, FencingTokenStale, OutboxSubmit
from conveyor_scheduler.store.outbox import SqlJournalOutbox
from conveyor_scheduler.store.sql import SqlSchedulerStore
from conveyor_scheduler.workflows import WorkflowRegistry

if TYPE_CHECKING:
    from conveyor_scheduler.advisor import Advisor

log = logging.getLogger(__name__)


class SchedulerService:
    name = "scheduler"
    migrations = MIGRATIONS

    def __init__(
        self,
        core: CoreSettings,
        coordination: Coordination,
        settings: SchedulerSettings | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.core = core
        self.settings = settings or load(SchedulerSettings)
        self.coordination = coordination
        self.clock = clock or SystemClock()
        self.database_url = core.database_url_for(self.name)
        self.engine_db = db.create_engine(self.database_url, core)
        self.store = SqlSchedulerStore(self.engine_db)
        self.engine = SchedulerEngine(self.store, coordination, self.settings, self.clock)
        self.workflows = WorkflowRegistry()
        self.servicer = SchedulerServicer(
            self.engine, PageTokens(core.page_token_secret), self.workflows
        )
        self.journal_outbox = SqlJournalOutbox(self.engine_db, self.clock)
        s = self.settings
        self.election = LeaderElection(
            coordination,
            s.leader_lease_name,
            s.lease_ttl_seconds,
            s.lease_ttl_seconds * s.lease_renew_fraction,
            s.lease_retry_seconds,
            self._on_elected,
            self._on_deposed,
        )
        self.queue: QueueClient | None = None
        self.events: EventsClient | None = None
        self.relay: SubmitRelay | None = None
        self.tracker: OutcomeTracker | None = None
        self.advisor: Advisor | None = None
        self._journal_address = ""
        self.journal = JournalDelivery(
            self.journal_outbox,
            coordination,
            core,
            RelaySettings(
                batch_size=s.journal_batch_size,
                poll_seconds=s.relay_poll_seconds,
                backoff_initial_seconds=s.relay_backoff_initial_seconds,
                backoff_max_seconds=s.relay_backoff_max_seconds,
                append_timeout_seconds=s.journal_append_timeout_seconds,
            ),
            name="scheduler",
        )
        self._leader_tasks: list[asyncio.Task[None]] = []
        self._started = False

    def registrations(self) -> list[ServiceRegistration]:
        return [
            ServiceRegistration.of(
                SERVICE_NAME,
                service_pb2_grpc.add_SchedulerServiceServicer_to_server,
                self.servicer,
                ACCESS,
            )
        ]

    async def start(self) -> None:
        if self._started:
            return
        await migrations.ensure_schema(self.engine_db, MIGRATIONS, apply=self.core.migrate_on_start)
        if self.core.journal_address:
            self._journal_address = self.core.journal_address
        # Rare-event counters exported from the start (conveyor_core.metrics.announce).
        announce(SLOTS_SKIPPED, LEADER_CHANGES)
        self._started = True
        log.info("scheduler service started on %s", db.redacted(self.database_url))

    async def attach_journal(self, address: str) -> None:
        """Journal fires, skips and misses to the JournalService at `address` (leader only)."""
        self._journal_address = self._journal_address or address

    async def attach_peers(self, addresses: Mapping[str, str]) -> None:
        """Connect to the queue (and the event store) and run for leadership; idempotent."""
        if self.queue is not None:
            return
        if "queue" not in addresses:
            log.warning("no queue address (CONVEYOR_QUEUE_ADDRESS): this scheduler never fires")
            return
        timeout = self.settings.submit_timeout_seconds
        if "executor" in addresses:  # workflow targets are checked against deployed apps
            self.workflows.attach(addresses["executor"], self.core, timeout)
        self.queue = QueueClient(addresses["queue"], self.core, timeout)
        self.engine.submitter = self.queue  # RunJob submits on any replica
        if "events" in addresses:
            self.events = EventsClient(addresses["events"], self.core, timeout)
        self.advisor = self._build_advisor()
        self.relay = SubmitRelay(
            self.store,
            self.queue,
            self.coordination,
            self.settings,
            self.clock,
            self._on_submitted,
        )
        self.tracker = OutcomeTracker(
            self.store, self.queue, self.settings, self.clock, self.engine.limits, self.advisor
        )
        await self.election.start()

    def _build_advisor(self) -> Advisor | None:
        from conveyor_scheduler.advisor import Advisor, AdvisorSettings

        settings = load(AdvisorSettings)
        return Advisor(settings, self.clock) if settings.enabled else None

    def _on_submitted(self, done: list[tuple[OutboxSubmit, Delivery]]) -> None:
        now = self.clock.now()
        for row, delivery in done:
            if row.action == "submit" and not delivery.error:
                self.engine.record_lag(row.slot_at, now)

    # -- leader tasks ----------------------------------------------------------------

    async def _on_elected(self, lease: Lease) -> None:
        assert self.relay is not None and self.tracker is not None
        await self.relay.start()
        loops: list[tuple[str, Callable[[], Awaitable[object]], float]] = [
            ("outcomes", self.tracker.track_once, self.settings.outcome_poll_seconds),
        ]
        if self.events is not None:
            events = self.events
            loops.append(
                (
                    "events",
                    lambda: self.tracker.poll_events_once(events),  # type: ignore[union-attr]
                    self.settings.event_poll_seconds,
                )
            )
        self._leader_tasks = [asyncio.create_task(self._fire_loop(lease), name="scheduler-fire")]
        self._leader_tasks += [
            asyncio.create_task(self._periodic(name, step, every), name=f"scheduler-{name}")
            for name, step, every in loops
        ]
        if self._journal_address:  # leader only: journal what this replica fired
            await self.journal.start(self._journal_address)

    async def _on_deposed(self) -> None:
        tasks, self._leader_tasks = self._leader_tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(Exception):
                await cancel_and_wait(task)
        if self.relay is not None:
            await self.relay.stop()
        await self.journal.stop(flush=True)

    async def _fire_loop(self, lease: Lease) -> None:
        s = self.settings
        async with self.coordination.listen([WAKE_CHANNEL]) as listener:
            while True:
                try:
                    due = await self.engine.fire_due(s.leader_lease_name, lease.token)
                except FencingTokenStale:
                    # A newer leader has fired: this replica's lease is gone even if it
                    # has not noticed yet. Stop firing; the election will catch up.
                    log.warning("fencing token %d is stale: stopped firing", lease.token)
                    return
                except Exception:
                    log.exception("firing tick failed (fencing token %d)", lease.token)
                    due = 0
                if due < s.fire_batch_size:
                    await listener.wait(s.tick_seconds)

    async def _periodic(
        self, name: str, step: Callable[[], Awaitable[object]], every: float
    ) -> None:
        while True:
            try:
                await step()
            except Exception:
                log.warning("scheduler %s pass failed", name, exc_info=True)
            await asyncio.sleep(every)

    async def self_check(self) -> None:
        """Raises when the database is not at head or, once attached, the queue (which every
        fire is submitted to) does not answer SERVING: readiness follows both."""
        await migrations.require_head(self.engine_db, MIGRATIONS)
        if self.queue is not None:
            await self.queue.check()

    async def drain(self) -> None:
        """Stop firing and give up leadership while the queue may still answer (shutdown):
        a standby replica takes over at once instead of after the lease TTL."""
        await self.election.stop()
        await self._on_deposed()

    async def stop(self) -> None:
        await self.drain()
        for client in (self.queue, self.events):
            if client is not None:
                await client.close()
        self.queue = self.events = None
        self.engine.submitter = None
        await self.workflows.close()
        if self.advisor is not None:
            await self.advisor.close()
            self.advisor = None
        await self.engine_db.dispose()
        self._started = False


def build(
    core: CoreSettings, coordination: Coordination, clock: Clock | None = None
) -> SchedulerService:
    return SchedulerService(core, coordination, clock=clock)
