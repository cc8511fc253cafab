"""`conveyor schedules list|get|apply|delete|pause|resume|trigger|backfill|preview|fires`.

A schedule is named JOB/SCHEDULE (or namespaces/N/jobs/JOB/schedules/SCHEDULE).
`schedules apply -f FILE` reads Schedule messages in proto3 JSON; each names its job,
by a full `name` or by `job:` plus a short `name`:

    job: hello
    name: every-3s
    interval: {every: 3s}
    overlap_policy: OVERLAP_POLICY_SKIP
"""

from __future__ import annotations

from typing import Any

import click
import grpc
from google.protobuf import duration_pb2

from conveyor.scheduler.v1 import messages_pb2 as scheduler_pb
from conveyor.scheduler.v1 import service_pb2 as scheduler_rpc
from conveyor_cli import documents, names, render
from conveyor_cli.commands.common import collect, confirm, limit_option
from conveyor_cli.session import Session, execute

OUTPUT_ONLY = ("uid", "paused", "next_fire_time", "backoff_level", "create_time", "update_time")


@click.group()
def schedules() -> None:
    """Schedules: list, get, apply, delete, pause, resume, trigger, backfill, preview, fires."""


def spec_text(schedule: scheduler_pb.Schedule) -> str:
    kind = schedule.WhichOneof("spec")
    if kind == "interval":
        return f"every {render.seconds(schedule.interval, 'every')}"
    if kind == "cron":
        return f"cron {schedule.cron.expression} ({schedule.cron.time_zone or 'UTC'})"
    if kind == "one_off":
        return f"once at {render.when(schedule.one_off, 'fire_time')}"
    if kind == "on_event":
        topic = render.last_segment(schedule.on_event.topic)
        return f"on events of {topic} (debounce {render.seconds(schedule.on_event, 'debounce')})"
    return "-"


@schedules.command("list")
@click.option("--job", help="only this job's schedules")
@limit_option(0)
def list_schedules(job: str | None, limit: int) -> None:
    """The schedules of the namespace (or of one job)."""

    async def body(session: Session) -> None:
        parent = names.job(job or "-", session.namespace)
        request = scheduler_rpc.ListSchedulesRequest(parent=parent)
        items = await collect(session, session.scheduler.ListSchedules, request, "schedules", limit)
        out = render.table("SCHEDULE", "STATE", "WHEN", "NEXT FIRE", "OVERLAP", "BACKOFF")
        for schedule in items:
            job_id, schedule_id = schedule.name.split("/")[3], render.last_segment(schedule.name)
            render.row(
                out,
                f"{job_id}/{schedule_id}",
                render.state("paused" if schedule.paused else "active"),
                spec_text(schedule),
                render.when(schedule, "next_fire_time"),
                render.short_enum(schedule, "overlap_policy"),
                schedule.backoff_level,
            )
        render.emit_list(session.options, items, out, "no schedules")

    execute(body)


@schedules.command("get")
@click.argument("schedule")
def get(schedule: str) -> None:
    """One schedule: spec, policies, state and next fire."""

    async def body(session: Session) -> None:
        name = names.schedule(schedule, session.namespace)
        found = (
            await session.call(
                session.scheduler.GetSchedule, scheduler_rpc.GetScheduleRequest(name=name)
            )
        ).schedule
        rows: list[tuple[str, Any]] = [
            ("name", found.name),
            ("uid", found.uid),
            ("state", render.state("paused" if found.paused else "active")),
            ("when", spec_text(found)),
            ("next fire", render.when(found, "next_fire_time")),
            ("overlap", render.short_enum(found, "overlap_policy")),
            ("catch up", render.short_enum(found, "catch_up_mode")),
            ("catch-up window", render.seconds(found, "catch_up_window")),
            ("jitter", render.seconds(found, "jitter")),
            ("backoff level", found.backoff_level),
            ("created", render.when(found, "create_time")),
            ("updated", render.when(found, "update_time")),
        ]
        render.emit(session.options, render.message_json(found), render.details(rows))

    execute(body)


def _normalized(schedule: scheduler_pb.Schedule, existing: scheduler_pb.Schedule) -> bytes:
    """`schedule` with the defaults the scheduler applies, to compare with what it stores."""
    out = scheduler_pb.Schedule()
    out.CopyFrom(schedule)
    for field in ("name", *OUTPUT_ONLY):
        out.ClearField(field)
    if not out.overlap_policy:
        out.overlap_policy = scheduler_pb.OVERLAP_POLICY_SKIP
    if not out.catch_up_mode:
        out.catch_up_mode = scheduler_pb.CATCH_UP_MODE_FIRE_ONCE
    if not out.HasField("catch_up_window"):
        out.catch_up_window.CopyFrom(existing.catch_up_window)
    if not out.HasField("jitter"):
        out.jitter.CopyFrom(duration_pb2.Duration())
    kind = out.WhichOneof("spec")
    if kind == "interval" and not out.interval.HasField("anchor_time"):
        out.interval.anchor_time.CopyFrom(existing.interval.anchor_time)
    if kind == "cron" and not out.cron.time_zone:
        out.cron.time_zone = "UTC"
    if kind == "on_event" and not out.on_event.HasField("debounce"):
        out.on_event.debounce.CopyFrom(duration_pb2.Duration())
    return out.SerializeToString(deterministic=True)


def parse_schedule(
    document: dict[str, Any], job: str | None, namespace: str, where: str
) -> scheduler_pb.Schedule:
    """A Schedule from a file's document; `job` (or the document's `job:`) owns it."""
    document = dict(document)
    job_ref = document.pop("job", None) or job
    schedule = documents.parse_message(document, scheduler_pb.Schedule, where)
    if not schedule.name:
        raise click.BadParameter(f"{where}: a schedule needs a name (e.g. name: every-3s)")
    if not schedule.name.startswith("namespaces/"):
        if not job_ref:
            raise click.BadParameter(
                f"{where}: say which job the schedule {schedule.name!r} is of "
                "(job: NAME, or a full name namespaces/N/jobs/JOB/schedules/SCHEDULE)"
            )
        schedule.name = f"{names.job(str(job_ref), namespace)}/schedules/{schedule.name}"
    return schedule


async def apply_schedule(
    session: Session, job: str | None, document: dict[str, Any], where: str
) -> tuple[str, scheduler_pb.Schedule]:
    """Create, update or leave alone one schedule; ("created"|"updated"|"unchanged", it)."""
    schedule = parse_schedule(document, job, session.namespace, where)
    try:
        existing = (
            await session.call(
                session.scheduler.GetSchedule, scheduler_rpc.GetScheduleRequest(name=schedule.name)
            )
        ).schedule
    except grpc.aio.AioRpcError as error:
        if error.code() != grpc.StatusCode.NOT_FOUND:
            raise
        parent, _, schedule_id = schedule.name.rpartition("/schedules/")
        draft = scheduler_pb.Schedule()
        draft.CopyFrom(schedule)
        for field in ("name", *OUTPUT_ONLY):
            if field != "paused":  # a new schedule may be created paused
                draft.ClearField(field)
        reply = await session.call(
            session.scheduler.CreateSchedule,
            scheduler_rpc.CreateScheduleRequest(
                parent=parent, schedule_id=schedule_id, schedule=draft
            ),
        )
        return "created", reply.schedule
    if _normalized(schedule, existing) == _normalized(existing, existing):
        return "unchanged", existing
    for field in OUTPUT_ONLY:
        schedule.ClearField(field)
    reply = await session.call(
        session.scheduler.UpdateSchedule, scheduler_rpc.UpdateScheduleRequest(schedule=schedule)
    )
    return "updated", reply.schedule


@schedules.command("apply")
@click.option("-f", "--file", "path", required=True, help="YAML or JSON file of Schedule documents")
@click.option("--job", help="the job of schedules whose documents name none")
def apply(path: str, job: str | None) -> None:
    """Create or update schedules from a file."""
    docs = documents.load_documents(path)

    async def body(session: Session) -> None:
        results: list[dict[str, Any]] = []
        out = render.table("SCHEDULE", "RESULT", "NEXT FIRE")
        for index, document in enumerate(docs, 1):
            outcome, schedule = await apply_schedule(
                session, job, document, f"{path}: document {index}"
            )
            results.append({"schedule": render.message_json(schedule), "result": outcome})
            render.row(out, schedule.name, outcome, render.when(schedule, "next_fire_time"))
        render.emit(session.options, results, out)

    execute(body)


@schedules.command("delete")
@click.argument("schedule")
@click.option("--yes", is_flag=True, help="do not ask")
def delete(schedule: str, yes: bool) -> None:
    """Delete SCHEDULE (its fire history goes with it)."""

    async def body(session: Session) -> None:
        name = names.schedule(schedule, session.namespace)
        await session.call(
            session.scheduler.DeleteSchedule, scheduler_rpc.DeleteScheduleRequest(name=name)
        )
        if session.options.json:
            render.print_json({"deleted": name})
        else:
            render.console().print(render.Text(f"schedule {name} deleted"))

    confirm(f"Delete schedule {schedule}?", yes)
    execute(body)


@schedules.command("pause")
@click.argument("schedule")
def pause(schedule: str) -> None:
    """Stop firing SCHEDULE."""

    async def body(session: Session) -> None:
        name = names.schedule(schedule, session.namespace)
        reply = await session.call(
            session.scheduler.PauseSchedule, scheduler_rpc.PauseScheduleRequest(name=name)
        )
        render.done(session.options, reply.schedule, f"schedule {name} paused")

    execute(body)


@schedules.command("resume")
@click.argument("schedule")
def resume(schedule: str) -> None:
    """Fire SCHEDULE again; slots that passed while it was paused are not fired."""

    async def body(session: Session) -> None:
        name = names.schedule(schedule, session.namespace)
        reply = await session.call(
            session.scheduler.ResumeSchedule, scheduler_rpc.ResumeScheduleRequest(name=name)
        )
        next_fire = render.when(reply.schedule, "next_fire_time")
        render.done(session.options, reply.schedule, f"schedule {name} resumed; next {next_fire}")

    execute(body)


def _fires_table(fires: list[scheduler_pb.Fire], title: str | None = None) -> render.Table:
    out = render.table(
        "FIRE", "KIND", "OUTCOME", "SLOT", "FIRED", "JOB VERSION", "WORK ORDER", "REASON",
        title=title,
    )  # fmt: skip
    for fire in fires:
        render.row(
            out,
            render.last_segment(fire.name),
            render.short_enum(fire, "kind"),
            render.state(render.short_enum(fire, "outcome")),
            render.when(fire, "slot_time"),
            render.when(fire, "fire_time"),
            fire.job_version or "",
            render.last_segment(fire.work_order) if fire.work_order else "",
            fire.reason if not fire.error_type else f"{fire.error_type}: {fire.reason}",
        )
    return out


@schedules.command("trigger")
@click.argument("schedule")
def trigger(schedule: str) -> None:
    """Fire SCHEDULE now, outside its times (the overlap policy does not apply)."""

    async def body(session: Session) -> None:
        name = names.schedule(schedule, session.namespace)
        reply = await session.call(
            session.scheduler.TriggerSchedule, scheduler_rpc.TriggerScheduleRequest(name=name)
        )
        render.emit(session.options, render.message_json(reply.fire), _fires_table([reply.fire]))

    execute(body)


@schedules.command("backfill")
@click.argument("schedule")
@click.option("--start", required=True, help="first slot time (RFC 3339, or now-2h)")
@click.option("--end", default="now", show_default=True, help="end, exclusive (at most now)")
def backfill(schedule: str, start: str, end: str) -> None:
    """Fire every slot of [--start, --end) that has not fired yet."""
    start_time = documents.parse_time(start, "--start")
    end_time = documents.parse_time(end, "--end")

    async def body(session: Session) -> None:
        name = names.schedule(schedule, session.namespace)
        reply = await session.call(
            session.scheduler.BackfillSchedule,
            scheduler_rpc.BackfillScheduleRequest(
                name=name,
                start_time=documents.timestamp(start_time),
                end_time=documents.timestamp(end_time),
            ),
        )
        fires = list(reply.fires)
        title = f"{len(fires)} slot(s) fired, {reply.already_fired} had fired before"
        render.emit(session.options, render.message_json(reply), _fires_table(fires, title))

    execute(body)


@schedules.command("preview")
@click.argument("schedule")
@click.option("--count", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--from", "start", help="from this time (default now; RFC 3339 or now-1h)")
def preview(schedule: str, count: int, start: str | None) -> None:
    """The next fire times of SCHEDULE."""
    start_time = documents.parse_time(start, "--from") if start else None

    async def body(session: Session) -> None:
        request = scheduler_rpc.PreviewScheduleRequest(
            name=names.schedule(schedule, session.namespace), count=count
        )
        if start_time is not None:
            request.start_time.CopyFrom(documents.timestamp(start_time))
        reply = await session.call(session.scheduler.PreviewSchedule, request)
        times = [render.timestamp_text(t) for t in reply.fire_times]
        out = render.table("#", "FIRE TIME")
        for number, text in enumerate(times, 1):
            render.row(out, number, text)
        data = [t.ToJsonString() for t in reply.fire_times]
        render.emit(session.options, data, out)

    execute(body)


@schedules.command("fires")
@click.argument("schedule")
@limit_option()
def fires(schedule: str, limit: int) -> None:
    """Fire history of SCHEDULE, newest first: outcomes, skipped and missed slots."""

    async def body(session: Session) -> None:
        request = scheduler_rpc.ListFiresRequest(parent=names.schedule(schedule, session.namespace))
        items = await collect(session, session.scheduler.ListFires, request, "fires", limit)
        render.emit_list(session.options, items, _fires_table(items), "no fires yet")

    execute(body)
