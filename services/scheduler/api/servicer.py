"""gRPC servicer of SchedulerService: validate, translate, call the engine, translate back.

Domain errors propagate to the error interceptor, which maps them to gRPC
status with rich details.
"""

from __future__ import annotations

import hashlib

from conveyor.scheduler.v1 import service_pb2 as rpc
from conveyor.scheduler.v1 import service_pb2_grpc
from conveyor_core.errors import FieldViolation, InvalidArgument
from conveyor_core.pagination import PageTokens, page_size
from conveyor_core.protoconv import opt_ts, ts
from conveyor_scheduler.api import convert
from conveyor_scheduler.api import validation as check
from conveyor_scheduler.domain import timing
from conveyor_scheduler.domain.model import JobRef, ScheduleRef
from conveyor_scheduler.engine import SchedulerEngine
from conveyor_scheduler.settings import SchedulerSettings
from conveyor_scheduler.workflows import WorkflowRegistry

SERVICE_NAME = rpc.DESCRIPTOR.services_by_name["SchedulerService"].full_name


def _scope(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()


class SchedulerServicer(service_pb2_grpc.SchedulerServiceServicer):
    def __init__(
        self,
        engine: SchedulerEngine,
        page_tokens: PageTokens,
        workflows: WorkflowRegistry | None = None,
    ) -> None:
        self._engine = engine
        self._tokens = page_tokens
        self._workflows = workflows or WorkflowRegistry()

    @property
    def _settings(self) -> SchedulerSettings:
        return self._engine.settings

    def _size(self, requested: int) -> int:
        return page_size(requested, self._settings.default_page_size, self._settings.max_page_size)

    # -- jobs --------------------------------------------------------------------------

    async def CreateJob(self, request, context):  # type: ignore[no-untyped-def]
        namespace = check.parse_namespace(request.parent, "parent")
        job_id = check.check_id(request.job_id, "job_id")
        check.check_job(request.job, self._settings)
        await self._workflows.check(namespace, request.job.target)
        definition = convert.definition_from_pb(request.job, self._settings.default_queue)
        job = await self._engine.create_job(JobRef(namespace, job_id), definition)
        return rpc.CreateJobResponse(job=convert.job_to_pb(job))

    async def GetJob(self, request, context):  # type: ignore[no-untyped-def]
        ref = check.parse_job(request.name, "name")
        if request.version < 0:
            raise InvalidArgument(FieldViolation("version", "must not be negative"))
        job = await self._engine.get_job(ref, request.version)
        return rpc.GetJobResponse(job=convert.job_to_pb(job))

    async def ListJobs(self, request, context):  # type: ignore[no-untyped-def]
        namespace = check.parse_namespace(request.parent, "parent")
        size, scope = self._size(request.page_size), _scope("jobs", namespace)
        cursor = self._tokens.decode(scope, request.page_token) or {"after": ""}
        found = await self._engine.list_jobs(namespace, cursor["after"], size + 1)
        page, token = self._tokens.next_page(
            found, size, scope, lambda job: {"after": job.ref.job_id}
        )
        return rpc.ListJobsResponse(
            jobs=[convert.job_to_pb(j) for j in page], next_page_token=token
        )

    async def UpdateJob(self, request, context):  # type: ignore[no-untyped-def]
        ref = check.parse_job(request.job.name, "job.name")
        check.check_job(request.job, self._settings)
        await self._workflows.check(ref.namespace, request.job.target)
        definition = convert.definition_from_pb(request.job, self._settings.default_queue)
        job = await self._engine.update_job(ref, definition, request.expected_version)
        return rpc.UpdateJobResponse(job=convert.job_to_pb(job))

    async def DeleteJob(self, request, context):  # type: ignore[no-untyped-def]
        await self._engine.delete_job(check.parse_job(request.name, "name"))
        return rpc.DeleteJobResponse()

    # -- schedules ---------------------------------------------------------------------

    async def CreateSchedule(self, request, context):  # type: ignore[no-untyped-def]
        job = check.parse_job(request.parent, "parent")
        schedule_id = check.check_id(request.schedule_id, "schedule_id")
        check.check_schedule(request.schedule, self._settings, "schedule")
        schedule = await self._engine.create_schedule(
            ScheduleRef(job.namespace, job.job_id, schedule_id),
            convert.spec_from_pb(request.schedule),
            convert.policy_from_pb(request.schedule, self._settings.catch_up_window_seconds),
            paused=request.schedule.paused,
        )
        return rpc.CreateScheduleResponse(schedule=convert.schedule_to_pb(schedule))

    async def GetSchedule(self, request, context):  # type: ignore[no-untyped-def]
        schedule = await self._engine.get_schedule(check.parse_schedule(request.name, "name"))
        return rpc.GetScheduleResponse(schedule=convert.schedule_to_pb(schedule))

    async def ListSchedules(self, request, context):  # type: ignore[no-untyped-def]
        job = check.parse_job(request.parent, "parent", allow_any=True)
        job_id = None if job.job_id == "-" else job.job_id
        size, scope = self._size(request.page_size), _scope("schedules", job)
        cursor = self._tokens.decode(scope, request.page_token) or {"after": ""}
        found = await self._engine.list_schedules(job.namespace, job_id, cursor["after"], size + 1)
        page, token = self._tokens.next_page(
            found, size, scope, lambda s: {"after": f"{s.ref.job_id}/{s.ref.schedule_id}"}
        )
        return rpc.ListSchedulesResponse(
            schedules=[convert.schedule_to_pb(s) for s in page], next_page_token=token
        )

    async def UpdateSchedule(self, request, context):  # type: ignore[no-untyped-def]
        ref = check.parse_schedule(request.schedule.name, "schedule.name")
        check.check_schedule(request.schedule, self._settings, "schedule")
        schedule = await self._engine.update_schedule(
            ref,
            convert.spec_from_pb(request.schedule),
            convert.policy_from_pb(request.schedule, self._settings.catch_up_window_seconds),
        )
        return rpc.UpdateScheduleResponse(schedule=convert.schedule_to_pb(schedule))

    async def DeleteSchedule(self, request, context):  # type: ignore[no-untyped-def]
        await self._engine.delete_schedule(check.parse_schedule(request.name, "name"))
        return rpc.DeleteScheduleResponse()

    async def PauseSchedule(self, request, context):  # type: ignore[no-untyped-def]
        schedule = await self._engine.pause(check.parse_schedule(request.name, "name"))
        return rpc.PauseScheduleResponse(schedule=convert.schedule_to_pb(schedule))

    async def ResumeSchedule(self, request, context):  # type: ignore[no-untyped-def]
        schedule = await self._engine.resume(check.parse_schedule(request.name, "name"))
        return rpc.ResumeScheduleResponse(schedule=convert.schedule_to_pb(schedule))

    async def TriggerSchedule(self, request, context):  # type: ignore[no-untyped-def]
        fire = await self._engine.trigger(check.parse_schedule(request.name, "name"))
        return rpc.TriggerScheduleResponse(fire=convert.fire_to_pb(fire))

    async def RunJob(self, request, context):  # type: ignore[no-untyped-def]
        run = await self._engine.run_job(check.check_run_job(request, self._settings))
        return rpc.RunJobResponse(
            work_order=run.order.name,
            work_order_id=run.order.id,
            job_version=run.job_version,
            already_exists=run.order.already_exists,
            correlation_id=run.order.correlation_id,
        )

    async def BackfillSchedule(self, request, context):  # type: ignore[no-untyped-def]
        ref = check.parse_schedule(request.name, "name")
        start, end = opt_ts(request, "start_time"), opt_ts(request, "end_time")
        problems = []
        if start is None:
            problems.append(FieldViolation("start_time", "required"))
        if end is None:
            problems.append(FieldViolation("end_time", "required"))
        elif end > self._engine.clock.now():
            problems.append(FieldViolation("end_time", "must not be in the future"))
        elif start is not None and end <= start:
            problems.append(FieldViolation("end_time", "must be after start_time"))
        if problems:
            raise InvalidArgument(problems)
        assert start is not None and end is not None
        await self._check_backfill_size(ref, start, end)
        fired, already = await self._engine.backfill(ref, start, end)
        return rpc.BackfillScheduleResponse(
            fires=[convert.fire_to_pb(f) for f in fired], already_fired=already
        )

    async def _check_backfill_size(self, ref, start, end) -> None:  # type: ignore[no-untyped-def]
        schedule = await self._engine.get_schedule(ref)
        limit = self._settings.max_backfill_slots
        if len(timing.slots_in(schedule.spec, start, end, limit + 1)) > limit:
            raise InvalidArgument(
                FieldViolation(
                    "start_time", f"the range holds more than {limit} slots (max backfill slots)"
                )
            )

    async def PreviewSchedule(self, request, context):  # type: ignore[no-untyped-def]
        ref = check.parse_schedule(request.name, "name")
        limit = self._settings.max_preview_count
        if not 0 <= request.count <= limit:
            raise InvalidArgument(FieldViolation("count", f"must be in [0, {limit}]"))
        schedule = await self._engine.get_schedule(ref)
        times = self._engine.preview(schedule, opt_ts(request, "start_time"), request.count or 10)
        return rpc.PreviewScheduleResponse(fire_times=[ts(t) for t in times])

    async def ListFires(self, request, context):  # type: ignore[no-untyped-def]
        ref = check.parse_schedule(request.parent, "parent")
        size, scope = self._size(request.page_size), _scope("fires", ref)
        cursor = self._tokens.decode(scope, request.page_token) or {"before": 0}
        found = await self._engine.list_fires(ref, cursor["before"], size + 1)
        page, token = self._tokens.next_page(found, size, scope, lambda f: {"before": f[0]})
        return rpc.ListFiresResponse(
            fires=[convert.fire_to_pb(f) for _, f in page], next_page_token=token
        )

    async def ListPolicyDecisions(self, request, context):  # type: ignore[no-untyped-def]
        ref = check.parse_schedule(request.parent, "parent")
        size, scope = self._size(request.page_size), _scope("decisions", ref)
        cursor = self._tokens.decode(scope, request.page_token) or {"before": 0}
        found = await self._engine.list_decisions(ref, cursor["before"], size + 1)
        page, token = self._tokens.next_page(found, size, scope, lambda d: {"before": d.seq})
        return rpc.ListPolicyDecisionsResponse(
            decisions=[convert.decision_to_pb(d) for d in page], next_page_token=token
        )
