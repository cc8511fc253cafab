"""`conveyor jobs list|get|apply|delete|run`: the scheduler's job definitions.

`jobs apply -f FILE` reads Job messages in proto3 JSON (a YAML or JSON file, several
documents allowed); a document may also hold `schedules:`, the job's schedules. A job
that does not exist is created, one whose definition differs gets a new version, an
equal one is left alone ("unchanged"), so applying the same file twice changes nothing.

`jobs run NAME` runs the job's latest version (or --version) now, outside its schedules,
with the scheduler's RunJob: one call, journaled as scheduler.job.run; the run records
the job and its version.
"""

from __future__ import annotations

import json
from typing import Any

import click
import grpc

from conveyor.common.v1 import types_pb2
from conveyor.scheduler.v1 import messages_pb2 as scheduler_pb
from conveyor.scheduler.v1 import service_pb2 as scheduler_rpc
from conveyor_cli import documents, names, render
from conveyor_cli.commands.common import collect, confirm, limit_option
from conveyor_cli.commands.schedules import apply_schedule
from conveyor_cli.session import Exit, Session, execute
from conveyor_cli.watch import wait_for_run, watch_run

OUTPUT_ONLY = ("name", "version", "create_time", "update_time")


@click.group()
def jobs() -> None:
    """Jobs: list, get, apply from a file, delete, run now."""


def target_text(job: scheduler_pb.Job) -> str:
    kind = job.target.WhichOneof("kind")
    if kind == "http":
        endpoints = job.target.http.endpoints
        mode = render.short_enum(job.target.http, "mode")
        return f"http: {len(endpoints)} endpoint(s), {mode}"
    if kind == "command":
        return "command: " + " ".join(job.target.command.argv)
    if kind == "workflow":
        return f"workflow: {job.target.workflow.workflow}/{job.target.workflow.handler}"
    return "-"


@jobs.command("list")
@limit_option(0)
def list_jobs(limit: int) -> None:
    """The jobs of the namespace."""

    async def body(session: Session) -> None:
        request = scheduler_rpc.ListJobsRequest(parent=session.parent)
        items = await collect(session, session.scheduler.ListJobs, request, "jobs", limit)
        out = render.table("JOB", "VERSION", "QUEUE", "TARGET", "UPDATED", "DESCRIPTION")
        for job in items:
            render.row(
                out,
                render.last_segment(job.name),
                job.version,
                job.queue,
                target_text(job),
                render.when(job, "update_time"),
                job.description,
            )
        render.emit_list(session.options, items, out, f"no jobs in {session.parent}")

    execute(body)


@jobs.command("get")
@click.argument("job")
@click.option("--version", type=click.IntRange(min=1), help="this version (default: latest)")
def get(job: str, version: int | None) -> None:
    """One job's definition (-o json gives the whole of it, fit for `jobs apply`)."""

    async def body(session: Session) -> None:
        name = names.job(job, session.namespace)
        reply = await session.call(
            session.scheduler.GetJob, scheduler_rpc.GetJobRequest(name=name, version=version or 0)
        )
        found = reply.job
        rows: list[tuple[str, Any]] = [
            ("name", found.name),
            ("version", found.version),
            ("description", found.description),
            ("queue", found.queue),
            ("priority", found.priority),
            ("target", target_text(found)),
        ]
        if found.target.WhichOneof("kind") == "http":
            for endpoint in found.target.http.endpoints:
                rows.append((f"  {endpoint.name}", f"{endpoint.method} {endpoint.url}"))
        if found.HasField("retry_policy"):
            rows.append(("max attempts", found.retry_policy.maximum_attempts or "default"))
        rows += [
            ("timeout", render.seconds(found, "start_to_close_timeout")),
            ("adaptive", render.short_enum(found.adaptive_policy, "mode")),
            ("created", render.when(found, "create_time")),
            ("updated", render.when(found, "update_time")),
        ]
        render.emit(session.options, render.message_json(found), render.details(rows))

    execute(body)


def _definition(job: scheduler_pb.Job, default_queue: str) -> bytes:
    document = scheduler_pb.Job()
    document.CopyFrom(job)
    for field in OUTPUT_ONLY:
        document.ClearField(field)
    if not document.queue:
        document.queue = default_queue
    return document.SerializeToString(deterministic=True)


async def apply_job(session: Session, job: scheduler_pb.Job) -> tuple[str, scheduler_pb.Job]:
    """Create, update (new version) or leave alone; ("created"|"updated"|"unchanged", job)."""
    name = job.name
    try:
        existing = (
            await session.call(session.scheduler.GetJob, scheduler_rpc.GetJobRequest(name=name))
        ).job
    except grpc.aio.AioRpcError as error:
        if error.code() != grpc.StatusCode.NOT_FOUND:
            raise
        parent, _, job_id = name.rpartition("/jobs/")
        draft = scheduler_pb.Job()
        draft.CopyFrom(job)
        for field in OUTPUT_ONLY:
            draft.ClearField(field)
        reply = await session.call(
            session.scheduler.CreateJob,
            scheduler_rpc.CreateJobRequest(parent=parent, job_id=job_id, job=draft),
        )
        return "created", reply.job
    if _definition(job, existing.queue) == _definition(existing, existing.queue):
        return "unchanged", existing
    update = scheduler_pb.Job()
    update.CopyFrom(job)
    for field in ("version", "create_time", "update_time"):
        update.ClearField(field)
    reply = await session.call(
        session.scheduler.UpdateJob,
        scheduler_rpc.UpdateJobRequest(job=update, expected_version=existing.version),
    )
    return "updated", reply.job


@jobs.command("apply")
@click.option(
    "-f",
    "--file",
    "path",
    required=True,
    help="YAML or JSON file of Job documents (each may hold `schedules:`); - for stdin",
)
def apply(path: str) -> None:
    """Create or update jobs (and their schedules) from a file."""
    docs = documents.load_documents(path)

    async def body(session: Session) -> None:
        results: list[dict[str, Any]] = []
        out = render.table("RESOURCE", "RESULT", "VERSION")
        for index, document in enumerate(docs, 1):
            where = f"{path}: document {index}"
            document = dict(document)
            schedules = document.pop("schedules", None) or []
            if not isinstance(schedules, list):
                raise click.BadParameter(f"{where}: schedules must be a list")
            job = documents.parse_message(document, scheduler_pb.Job, where)
            if not job.name:
                raise click.BadParameter(f"{where}: a job needs a name (e.g. name: hello)")
            job.name = names.job(job.name, session.namespace)
            outcome, applied = await apply_job(session, job)
            results.append({"job": render.message_json(applied), "result": outcome})
            render.row(out, applied.name, outcome, f"v{applied.version}")
            for number, item in enumerate(schedules, 1):
                if not isinstance(item, dict):
                    raise click.BadParameter(f"{where}: schedules[{number}] is not an object")
                outcome, schedule = await apply_schedule(
                    session, applied.name, item, f"{where}: schedules[{number}]"
                )
                results.append({"schedule": render.message_json(schedule), "result": outcome})
                render.row(out, schedule.name, outcome, "")
        render.emit(session.options, results, out)

    execute(body)


@jobs.command("delete")
@click.argument("job")
@click.option("--yes", is_flag=True, help="do not ask")
def delete(job: str, yes: bool) -> None:
    """Delete JOB and its schedules (its runs stay)."""

    async def body(session: Session) -> None:
        name = names.job(job, session.namespace)
        await session.call(session.scheduler.DeleteJob, scheduler_rpc.DeleteJobRequest(name=name))
        if session.options.json:
            render.print_json({"deleted": name})
        else:
            render.console().print(render.Text(f"job {name} deleted, with its schedules"))

    confirm(f"Delete job {job} and its schedules?", yes)
    execute(body)


def json_payload(value: Any) -> types_pb2.Payload:
    return types_pb2.Payload(
        data=json.dumps(value, separators=(",", ":")).encode(), content_type="application/json"
    )


@jobs.command("run")
@click.argument("job")
@click.option("--version", type=click.IntRange(min=1), help="this version (default: latest)")
@click.option("--endpoint", "endpoints", multiple=True, help="HTTP jobs: call only this endpoint")
@click.option("--input", "input_text", help="JSON input of the run (@file reads a file)")
@click.option(
    "--request-id",
    "--idempotency-key",
    "request_id",
    default="",
    help="run once per id: the same id answers with the first run (default: a new run)",
)
@click.option("--watch", is_flag=True, help="follow the run until it ends (exit 4 if it fails)")
def run(
    job: str,
    version: int | None,
    endpoints: tuple[str, ...],
    input_text: str | None,
    request_id: str,
    watch: bool,
) -> None:
    """Run JOB now, outside its schedules (the scheduler's RunJob): prints the work order
    and the run."""
    input_json = documents.json_value(input_text, "--input") if input_text else None

    async def body(session: Session) -> int | None:
        name = names.job(job, session.namespace)
        request = scheduler_rpc.RunJobRequest(
            name=name, version=version or 0, endpoints=list(endpoints), request_id=request_id
        )
        if input_json is not None:
            request.input.CopyFrom(json_payload(input_json))
        reply = await session.call(session.scheduler.RunJob, request)
        namespace = names.namespace_of(name) or session.namespace
        run_name = names.run(reply.work_order, namespace)
        if session.options.json:
            document = render.message_json(reply)
            document["run"] = run_name
            render.print_json(document, lines=watch)
        else:
            again = " (that request id ran before: the same order)" if reply.already_exists else ""
            text = f"job {name} v{reply.job_version}: work order {reply.work_order}{again}"
            render.console().print(render.Text(text))
            render.console().print(render.Text(f"run {run_name}"))
        if not watch:
            return None
        if not await wait_for_run(session, run_name, reply.work_order):
            return int(Exit.RUN_FAILED)  # the order ended without a run (cancelled while queued)
        return await watch_run(session, run_name)

    execute(body)
