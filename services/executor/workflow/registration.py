"""An executor hosting an app registers its workflows with the platform, idempotently.

For each workflow, through the services' public contracts:
* the executor's own store: the definition (handlers, topics, budgets, code
  version); a paused workflow stays paused;
* the event store: each consumer's topic (tagged with the workflow);
* the queue: the workflow's queue allows one leased order per concurrency key,
  so one session per workflow runs at a time across all executors;
* the scheduler: a job per handler (target: the workflow and the handler), and
  its schedule: the producer's own interval, cron or one-off, or, for a
  consumer, "when its topic has pending events" with the consumer's debounce.
  A job or schedule that already says the same is left alone.

Registration retries until every part answered (a peer may start later).
"""

from __future__ import annotations

import asyncio
import logging

import grpc
from google.protobuf import duration_pb2, field_mask_pb2, timestamp_pb2

from conveyor.common.v1 import job_pb2
from conveyor.queue.v1 import messages_pb2 as queue_pb
from conveyor.queue.v1 import service_pb2 as queue_rpc
from conveyor.queue.v1 import service_pb2_grpc as queue_grpc
from conveyor.scheduler.v1 import messages_pb2 as sched_pb
from conveyor.scheduler.v1 import service_pb2 as sched_rpc
from conveyor.scheduler.v1 import service_pb2_grpc as sched_grpc
from conveyor_core.clock import Clock
from conveyor_core.grpc import create_channel
from conveyor_core.settings import CoreSettings
from conveyor_executor.domain.workflow import HandlerDef, HandlerKind, WorkflowRecord
from conveyor_executor.store.workflow_base import WorkflowStore
from conveyor_executor.workflow.peers import EventsPort, topic_name
from conveyor_sdk import App, Consumer, Producer, Schedule, Workflow
from conveyor_sdk._workflow import handler_job_id

log = logging.getLogger(__name__)


job_id = handler_job_id  # [a-z0-9][a-z0-9-]{0,62}, as the scheduler wants


def _duration(seconds: float) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromNanoseconds(int(seconds * 1e9))
    return out


def schedule_of(handler: Producer | Consumer, namespace: str) -> sched_pb.Schedule:
    schedule = sched_pb.Schedule()
    if isinstance(handler, Consumer):
        schedule.on_event.topic = topic_name(namespace, handler.topic)
        schedule.on_event.debounce.CopyFrom(_duration(handler.debounce_seconds))
        return schedule
    spec: Schedule = handler.schedule
    if spec.kind == "every":
        schedule.interval.every.CopyFrom(_duration(spec.every_seconds))
    elif spec.kind == "cron":
        schedule.cron.expression = spec.expression
        schedule.cron.time_zone = spec.time_zone
    else:
        assert spec.at is not None
        at = timestamp_pb2.Timestamp()
        at.FromDatetime(spec.at)
        schedule.one_off.fire_time.CopyFrom(at)
    return schedule


def record_of(app: App, workflow: Workflow, clock: Clock) -> WorkflowRecord:
    handlers = [
        HandlerDef(
            p.name,
            HandlerKind.PRODUCER,
            schedule=f"namespaces/{app.namespace}/jobs/{job_id(workflow.name, p.name)}"
            f"/schedules/{job_id(workflow.name, p.name)}",
        )
        for p in workflow.producers.values()
    ] + [
        HandlerDef(
            c.name,
            HandlerKind.CONSUMER,
            topic=c.topic,
            batch=c.batch,
            schedule=f"namespaces/{app.namespace}/jobs/{job_id(workflow.name, c.name)}"
            f"/schedules/{job_id(workflow.name, c.name)}",
            has_reconcile=c.has_reconcile,
        )
        for c in workflow.consumers.values()
    ]
    now = clock.now()
    return WorkflowRecord(
        app.namespace,
        workflow.name,
        tuple(handlers),
        app.version,
        workflow.queue,
        workflow.iteration_budget,
        workflow.cost_budget_usd or 0.0,
        now,
        now,
    )


class Registrar:
    def __init__(
        self,
        apps: list[App],
        store: WorkflowStore,
        events: EventsPort,
        queue_address: str,
        scheduler_address: str,
        core: CoreSettings,
        clock: Clock,
        timeout: float,
    ) -> None:
        self.apps = [a for a in apps if a.workflows]
        self.store = store
        self.events = events
        self.clock = clock
        self._timeout = timeout
        self._queue = queue_grpc.WorkOrderQueueServiceStub(
            create_channel(queue_address, settings=core)
        )
        self._scheduler = (
            sched_grpc.SchedulerServiceStub(create_channel(scheduler_address, settings=core))
            if scheduler_address
            else None
        )
        self.done = asyncio.Event()

    async def run_until_registered(self, backoff: float = 0.5, cap: float = 15.0) -> None:
        delay = backoff
        while True:
            try:
                await self.register_once()
            except Exception as exc:
                log.warning("registering workflows failed (%s); again in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(cap, delay * 2)
                continue
            self.done.set()
            return

    async def register_once(self) -> None:
        for app in self.apps:
            for workflow in app.workflows.values():
                await self._register(app, workflow)
                log.info(
                    "registered workflow %s/%s (version %r)",
                    app.namespace,
                    workflow.name,
                    app.version,
                )

    async def _register(self, app: App, workflow: Workflow) -> None:
        ns = app.namespace
        await self.store.workflow_register(record_of(app, workflow, self.clock))
        for topic in workflow.topics:
            await self.events.ensure_topic(ns, topic, workflow.name)
        await self._queue.UpdateQueue(
            queue_rpc.UpdateQueueRequest(
                queue=queue_pb.Queue(
                    name=f"namespaces/{ns}/queues/{workflow.queue}", max_in_flight_per_key=1
                ),
                update_mask=field_mask_pb2.FieldMask(paths=["max_in_flight_per_key"]),
            ),
            timeout=self._timeout,
        )
        if self._scheduler is None:
            log.warning(
                "workflow %s: no scheduler address (CONVEYOR_SCHEDULER_ADDRESS): producer "
                "schedules and consumer triggers are not registered",
                workflow.name,
            )
            return
        for handler in workflow.handlers.values():
            await self._job(ns, workflow, handler)

    async def _job(self, ns: str, workflow: Workflow, handler: Producer | Consumer) -> None:
        assert self._scheduler is not None
        ident = job_id(workflow.name, handler.name)
        name = f"namespaces/{ns}/jobs/{ident}"
        job = sched_pb.Job(
            name=name,
            description=f"{handler.kind} {handler.name} of workflow {workflow.name} "
            f"(registered by app version {workflow.app.version or 'unversioned'})",
            target=job_pb2.JobTarget(
                workflow=job_pb2.WorkflowTarget(workflow=workflow.name, handler=handler.name)
            ),
            queue=workflow.queue,
        )
        try:
            current = (
                await self._scheduler.GetJob(
                    sched_rpc.GetJobRequest(name=name), timeout=self._timeout
                )
            ).job
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                raise
            await self._scheduler.CreateJob(
                sched_rpc.CreateJobRequest(parent=f"namespaces/{ns}", job_id=ident, job=job),
                timeout=self._timeout,
            )
        else:
            if (current.target, current.queue, current.description) != (
                job.target,
                job.queue,
                job.description,
            ):
                await self._scheduler.UpdateJob(
                    sched_rpc.UpdateJobRequest(job=job), timeout=self._timeout
                )
        wanted = schedule_of(handler, ns)
        wanted.name = f"{name}/schedules/{ident}"
        try:
            schedule = (
                await self._scheduler.GetSchedule(
                    sched_rpc.GetScheduleRequest(name=wanted.name), timeout=self._timeout
                )
            ).schedule
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                raise
            await self._scheduler.CreateSchedule(
                sched_rpc.CreateScheduleRequest(parent=name, schedule_id=ident, schedule=wanted),
                timeout=self._timeout,
            )
            return
        if _spec(schedule) != _spec(wanted):
            wanted.paused = schedule.paused
            await self._scheduler.UpdateSchedule(
                sched_rpc.UpdateScheduleRequest(schedule=wanted), timeout=self._timeout
            )


def _spec(schedule: sched_pb.Schedule) -> bytes:
    kind = schedule.WhichOneof("spec")
    return f"{kind}".encode() + (
        getattr(schedule, kind).SerializeToString(deterministic=True) if kind else b""
    )
