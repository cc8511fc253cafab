"""Wiring of the executor service: store, worker pool, engine, servicer, lifecycle.

The pool starts leasing only once it knows where the queue is
(`attach_peers`, called by the Platform after start-up and readiness checks).
Journal records go through an outbox relay to the JournalService
(`attach_journal`), as the queue's do.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path

from conveyor.common.v1 import job_pb2
from conveyor.executor.v1 import service_pb2_grpc, workflow_pb2_grpc
from conveyor_core import db, migrations
from conveyor_core.clock import Clock, SystemClock
from conveyor_core.coordination import Coordination
from conveyor_core.gauges import SnapshotGauges
from conveyor_core.grpc import ServiceRegistration
from conveyor_core.outbox import JournalDelivery, OutboxNotifier, OutboxRelay, RelaySettings
from conveyor_core.pagination import PageTokens
from conveyor_core.settings import CoreSettings, load
from conveyor_executor import metrics
from conveyor_executor.api.access import ACCESS
from conveyor_executor.api.servicer import SERVICE_NAME, ExecutorServicer
from conveyor_executor.api.workflow_servicer import (
    WORKFLOW_ACCESS,
    WORKFLOW_SERVICE_NAME,
    WorkflowServicer,
)
from conveyor_executor.attempt import AttemptDeps, Runner
from conveyor_executor.engine import ExecutorEngine
from conveyor_executor.migrations import MIGRATIONS
from conveyor_executor.pool import WorkerPool
from conveyor_executor.queue_client import QueueClient
from conveyor_executor.recording import RunRecorder
from conveyor_executor.runners import RunnerSettings, SharedHttpClient, run_command, run_http
from conveyor_executor.runners.breaker import StateReads
from conveyor_executor.runners.context import RunContext, RunnerOutcome
from conveyor_executor.secrets import SecretSource
from conveyor_executor.settings import ExecutorSettings
from conveyor_executor.store.gauges import executor_snapshot
from conveyor_executor.store.outbox import OUTBOX_CHANNEL, SqlExecutorOutbox
from conveyor_executor.store.sql import SqlRunStore
from conveyor_executor.store.workflow_sql import SqlWorkflowStore
from conveyor_executor.tasks import TaskHost
from conveyor_executor.watch import WatchHub
from conveyor_executor.webhook import WebhookNotifier
from conveyor_executor.workflow.engine import WorkflowEngine
from conveyor_executor.workflow.peers import EventsPort, SessionSubmitter
from conveyor_executor.workflow.registration import Registrar
from conveyor_executor.workflow.session import SessionRunner
from conveyor_sdk import App, AppError

log = logging.getLogger(__name__)


def default_runners(
    runner_settings: RunnerSettings,
    coordination: Coordination,
    clock: Clock,
    workspace_root: Path,
    http_client: SharedHttpClient,
) -> dict[str, Runner]:
    """The runner of each target kind: HTTP endpoints and commands."""
    breaker_reads = StateReads(coordination)

    async def http(invocation: job_pb2.JobInvocation, ctx: RunContext) -> RunnerOutcome:
        return await run_http(
            invocation.target.http,
            list(invocation.endpoints),
            ctx,
            runner_settings,
            coordination,
            clock,
            client=http_client.get(),
            breaker_reads=breaker_reads,
        )

    async def command(invocation: job_pb2.JobInvocation, ctx: RunContext) -> RunnerOutcome:
        data = invocation.input.data if invocation.HasField("input") else None
        return await run_command(
            invocation.target.command, ctx, runner_settings, workspace_root, data, clock=clock
        )

    return {"http": http, "command": command}


class ExecutorService:
    """The executor as a unit a process can host."""

    name = "executor"
    migrations = MIGRATIONS

    def __init__(
        self,
        core: CoreSettings,
        coordination: Coordination,
        settings: ExecutorSettings | None = None,
        clock: Clock | None = None,
        runners: Mapping[str, Runner] | None = None,
        environ: Mapping[str, str] | None = None,
        apps: Sequence[App] = (),
        only_app_queues: bool = False,
    ) -> None:
        self.core = core
        self.settings = s = hosting(settings or load(ExecutorSettings), apps, only_app_queues)
        self.apps = list(apps)
        self.task_host = TaskHost(apps, s.concurrency) if apps else None
        self.clock = clock or SystemClock()
        self.coordination = coordination
        self.database_url = core.database_url_for(self.name)
        self.engine_db = db.create_engine(self.database_url, core)
        self.store = SqlRunStore(self.engine_db)
        self.workflow_store = SqlWorkflowStore(self.engine_db)
        self.outbox = SqlExecutorOutbox(self.engine_db, self.clock)
        self.outbox_notifier = OutboxNotifier(
            coordination, OUTBOX_CHANNEL, min_interval=s.relay_wake_interval_seconds
        )
        self.hub = WatchHub(s.watch_queue_size)
        poke = self.outbox_notifier.poke
        self.sessions = (
            SessionRunner(apps, self.workflow_store, s, self.clock, poke)
            if any(app.workflows for app in apps)
            else None
        )
        self.workflow_engine = WorkflowEngine(self.workflow_store, self.clock, poke)
        self.workflow_servicer = WorkflowServicer(
            self.workflow_engine, PageTokens(core.page_token_secret), s
        )
        self._workflow_peers: list[EventsPort | SessionSubmitter] = []
        self.registrar: Registrar | None = None
        self._registering: asyncio.Task[None] | None = None
        self.recorder = RunRecorder(
            self.store,
            self.hub,
            self.outbox_notifier.poke,
            s.max_failure_message_length,
            s.record_batch_size,
        )
        secrets = SecretSource(
            s.secrets_dir, os.environ if environ is None else environ, s.secrets_env_prefix
        )
        self.http_client = SharedHttpClient(s.http_client_pools, s.http_transport)
        if runners is None:
            runners = default_runners(
                s.runner_settings(), coordination, self.clock, s.workspace_root, self.http_client
            )
        deps = AttemptDeps(
            settings=s,
            recorder=self.recorder,
            hub=self.hub,
            secrets=secrets,
            clock=self.clock,
            runners=runners,
            webhook=WebhookNotifier(s.webhook_timeout_seconds, self.clock),
            identity=s.worker_identity or f"{socket.gethostname()}/{os.getpid()}",
            task_host=self.task_host,
            sessions=self.sessions,
        )
        self.pool = WorkerPool(deps)
        metrics.track_pool(self.pool)
        self.gauges = SnapshotGauges(
            "executor",
            lambda: executor_snapshot(self.engine_db, self.clock.now(), s.metrics_max_workflows),
            s.metrics_refresh_seconds,
            s.metrics_query_timeout_seconds,
        )
        self.engine = ExecutorEngine(
            self.store, self.pool, self.hub, s, self.clock, s.watch_poll_seconds
        )
        self.servicer = ExecutorServicer(self.engine, PageTokens(core.page_token_secret))
        self.queue: QueueClient | None = None
        self.journal = JournalDelivery(
            self.outbox, coordination, core, RelaySettings.of(self.settings), name="executor"
        )
        self._started = False

    def registrations(self) -> list[ServiceRegistration]:
        return [
            ServiceRegistration.of(
                SERVICE_NAME,
                service_pb2_grpc.add_ExecutorServiceServicer_to_server,
                self.servicer,
                ACCESS,
            ),
            ServiceRegistration.of(
                WORKFLOW_SERVICE_NAME,
                workflow_pb2_grpc.add_WorkflowServiceServicer_to_server,
                self.workflow_servicer,
                WORKFLOW_ACCESS,
            ),
        ]

    async def start(self) -> None:
        if self._started:
            return
        await migrations.ensure_schema(self.engine_db, MIGRATIONS, apply=self.core.migrate_on_start)
        if self.core.journal_address:
            await self.attach_journal(self.core.journal_address)
        if self.core.queue_address:
            self.queue = self._queue_client(self.core.queue_address)
        self.gauges.start()
        metrics.announce()
        self._started = True
        log.info("executor service started on %s", db.redacted(self.database_url))

    def _queue_client(self, address: str) -> QueueClient:
        s = self.settings
        return QueueClient(
            address,
            self.core,
            s.queue_call_timeout_seconds,
            s.queue_report_attempts,
            s.queue_report_backoff_seconds,
            s.record_batch_size,
        )

    async def attach_peers(self, addresses: Mapping[str, str]) -> None:
        """Start leasing from the queue at `addresses["queue"]`; without it, stay idle."""
        address = addresses.get("queue")
        if not address:
            log.warning("executor: no queue address (CONVEYOR_QUEUE_ADDRESS); not leasing")
            return
        if self.queue is None or self.queue.address != address:
            if self.queue is not None:
                await self.queue.close()
            self.queue = self._queue_client(address)
        await self._attach_workflows(addresses)
        self.pool.start(self.queue)
        log.info("executor leasing from the queue at %s", address)

    async def _attach_workflows(self, addresses: Mapping[str, str]) -> None:
        """The workflow runtime's peers: sessions submit follow-ups to the queue, and read
        and commit through the event store; hosted workflows register (in the background,
        retried until every peer answered)."""
        queue, events = addresses.get("queue", ""), addresses.get("events", "")
        timeout = self.settings.workflow_call_timeout_seconds
        submitter = SessionSubmitter(queue, self.core, timeout)
        self._workflow_peers.append(submitter)
        self.workflow_engine.submitter = submitter
        if self.sessions is None:
            return
        if not events:
            log.warning(
                "executor: no event store address (CONVEYOR_EVENTS_ADDRESS); "
                "workflow sessions fail until it is set"
            )
            return
        port = EventsPort(events, self.core, timeout)
        self._workflow_peers.append(port)
        self.sessions.attach(port, submitter)
        self.registrar = Registrar(
            self.apps,
            self.workflow_store,
            port,
            queue,
            addresses.get("scheduler", ""),
            self.core,
            self.clock,
            timeout,
        )
        self._registering = asyncio.create_task(
            self.registrar.run_until_registered(), name="executor:register-workflows"
        )

    @property
    def relay(self) -> OutboxRelay | None:
        """The running journal relay, if any."""
        return self.journal.relay

    async def attach_journal(self, address: str) -> None:
        """Start the outbox relay to the JournalService at `address`; idempotent."""
        self.outbox_notifier.enabled = True
        await self.journal.start(address)

    async def self_check(self) -> None:
        """Raises when the database is not at head, coordination is down or the queue is not
        reachable (when its address is known: configured, or attached earlier)."""
        await migrations.require_head(self.engine_db, MIGRATIONS)
        timeout = self.settings.self_check_timeout_seconds
        await asyncio.wait_for(self.coordination.ping(), timeout)
        if self.queue is not None:
            await self.queue.check(timeout)

    async def drain(self) -> None:
        """Stop leasing; finish or hand back in-flight runs (pool.py). Called by the
        Platform before its server stops; `stop()` drains too if it was not called.
        The journal relay then delivers what the drain wrote, once, and stops."""
        if self._registering is not None:
            self._registering.cancel()
        await self.pool.stop()
        await self.journal.stop(flush=True)

    async def stop(self) -> None:
        """Drain the pool (see pool.py), then stop the relay and close connections."""
        await self.gauges.stop()
        await self.drain()
        await self.outbox_notifier.close()
        await self.http_client.close()
        if self.task_host is not None:
            self.task_host.close()
        for peer in self._workflow_peers:
            await peer.close()
        self._workflow_peers.clear()
        queue, self.queue = self.queue, None
        if queue is not None:
            await queue.close()
        await self.engine_db.dispose()
        self._started = False


def hosting(
    settings: ExecutorSettings, apps: Sequence[App], only_app_queues: bool
) -> ExecutorSettings:
    """The settings of an executor hosting `apps`: it leases their namespace and queues
    (and its configured queues too, in the same namespace, unless `only_app_queues`)."""
    if not apps:
        return settings
    namespaces = {app.namespace for app in apps}
    if len(namespaces) > 1:
        raise AppError(f"one executor hosts apps of one namespace, not {sorted(namespaces)}")
    (namespace,) = namespaces
    queues = tuple(dict.fromkeys(q for app in apps for q in app.queues))
    if not only_app_queues and namespace == settings.namespace:
        queues = tuple(dict.fromkeys((*settings.queues, *queues)))
    return settings.model_copy(update={"namespace": namespace, "queues": queues})


def build(
    core: CoreSettings,
    coordination: Coordination,
    clock: Clock | None = None,
    apps: Sequence[App] = (),
    only_app_queues: bool = False,
) -> ExecutorService:
    return ExecutorService(
        core, coordination, clock=clock, apps=apps, only_app_queues=only_app_queues
    )
