"""`conveyor runs list|get|steps|watch|outputs|logs|abort`: the executor's record of runs."""

from __future__ import annotations

import sys

import click

from conveyor.executor.v1 import messages_pb2 as executor_pb
from conveyor.executor.v1 import service_pb2 as executor_rpc
from conveyor_cli import names, render
from conveyor_cli.commands.common import collect, limit_option
from conveyor_cli.session import Session, execute
from conveyor_cli.watch import failure_text, watch_run

STATES = {
    "pending": executor_pb.RUN_STATE_PENDING,
    "running": executor_pb.RUN_STATE_RUNNING,
    "succeeded": executor_pb.RUN_STATE_SUCCEEDED,
    "failed": executor_pb.RUN_STATE_FAILED,
    "aborted": executor_pb.RUN_STATE_ABORTED,
}


@click.group()
def runs() -> None:
    """Runs: list with filters, get, steps, watch live, logs (outputs), abort."""


@runs.command("list")
@click.option("--job", help="only runs of this job (name or namespaces/N/jobs/J)")
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice(list(STATES)),
    help="only runs in this state (repeat for several)",
)
@click.option("--schedule", help="only runs fired by this schedule (JOB/SCHEDULE)")
@click.option("--work-order", help="only the run of this work order (its name)")
@limit_option()
def list_runs(
    job: str | None,
    states: tuple[str, ...],
    schedule: str | None,
    work_order: str | None,
    limit: int,
) -> None:
    """Runs of the namespace, newest first."""

    async def body(session: Session) -> None:
        request = executor_rpc.ListRunsRequest(
            parent=session.parent,
            job=names.job(job, session.namespace) if job else "",
            states=[STATES[s] for s in states],
            schedule=names.schedule(schedule, session.namespace) if schedule else "",
            work_order=work_order or "",
        )
        items = await collect(session, session.executor.ListRuns, request, "runs", limit)
        out = render.table("RUN", "STATE", "KIND", "JOB", "CREATED", "ENDED", "SUMMARY")
        for run in items:
            job_text = render.last_segment(run.job) if run.job else "-"
            if run.job_version:
                job_text += f" v{run.job_version}"
            render.row(
                out,
                render.last_segment(run.name),
                render.state(render.short_enum(run, "state")),
                render.short_enum(run, "kind"),
                job_text,
                render.when(run, "create_time"),
                render.when(run, "end_time"),
                run.summary or (failure_text(run.failure) if run.HasField("failure") else ""),
            )
        render.emit_list(session.options, items, out, "no runs match")

    execute(body)


def _run_rows(run: executor_pb.Run) -> list[tuple[str, object]]:
    rows: list[tuple[str, object]] = [
        ("name", run.name),
        ("state", render.state(render.short_enum(run, "state"))),
        ("kind", render.short_enum(run, "kind")),
        ("work order", run.work_order),
    ]
    if run.job:
        rows.append(("job", f"{run.job} v{run.job_version}"))
    if run.schedule:
        rows += [("schedule", run.schedule), ("slot", render.when(run, "slot_time"))]
    rows += [
        ("created", render.when(run, "create_time")),
        ("started", render.when(run, "start_time")),
        ("ended", render.when(run, "end_time")),
    ]
    if run.HasField("progress"):
        rows.append(("progress", f"{run.progress.percent:.0f}% {run.progress.message}".strip()))
    if run.summary:
        rows.append(("summary", run.summary))
    if run.HasField("failure"):
        rows.append(("failure", failure_text(run.failure)))
    usage = run.usage
    if usage.input_tokens or usage.output_tokens or usage.cost_usd:
        rows.append(
            ("usage", f"{usage.input_tokens} in / {usage.output_tokens} out tokens, "
                      f"${usage.cost_usd:.4f}")
        )  # fmt: skip
    rows += [("correlation id", run.correlation_id), ("trace id", run.trace_id)]
    return rows


def _attempts_table(run: executor_pb.Run) -> render.Table:
    out = render.table(
        "ATTEMPT", "STATE", "EXECUTOR", "STARTED", "ENDED", "OUTCOME", title="attempts"
    )
    for attempt in run.attempts:
        outcome = failure_text(attempt.failure) if attempt.HasField("failure") else attempt.summary
        render.row(
            out,
            attempt.number,
            render.state(render.short_enum(attempt, "state")),
            attempt.executor,
            render.when(attempt, "start_time"),
            render.when(attempt, "end_time"),
            outcome,
        )
    return out


def _steps_table(steps: list[executor_pb.RunStep]) -> render.Table:
    out = render.table("#", "ATTEMPT", "KIND", "STEP", "STATUS", "STARTED", "DETAIL", title="steps")
    for step in steps:
        detail = failure_text(step.failure) if step.HasField("failure") else ""
        render.row(
            out,
            render.last_segment(step.name),
            step.attempt,
            step.kind,
            step.display_name,
            render.state(step.status),
            render.when(step, "start_time"),
            detail,
        )
    return out


async def _steps(session: Session, run: str) -> list[executor_pb.RunStep]:
    request = executor_rpc.ListRunStepsRequest(parent=run)
    return await collect(session, session.executor.ListRunSteps, request, "steps", 0)


@runs.command("get")
@click.argument("run")
def get(run: str) -> None:
    """One run: state, job, times, failure, attempts and steps.

    RUN is a run id, a run's name, or its work order's name."""

    async def body(session: Session) -> None:
        name = names.run(run, session.namespace)
        reply = await session.call(session.executor.GetRun, executor_rpc.GetRunRequest(name=name))
        if session.options.json:
            render.print_json(render.message_json(reply.run))
            return
        steps = await _steps(session, name)
        render.show(render.details(_run_rows(reply.run)))
        if reply.run.attempts:
            render.show(_attempts_table(reply.run))
        if steps:
            render.show(_steps_table(steps))

    execute(body)


@runs.command("steps")
@click.argument("run")
def steps(run: str) -> None:
    """The recorded steps of RUN (HTTP calls, iterations, checks), oldest first."""

    async def body(session: Session) -> None:
        items = await _steps(session, names.run(run, session.namespace))
        render.emit_list(session.options, items, _steps_table(items), "no steps recorded")

    execute(body)


@runs.command("watch")
@click.argument("run")
def watch(run: str) -> None:
    """Follow RUN live (state, progress bar, steps) until it ends.

    Exit code 0 when it succeeded, 4 when it failed or was aborted. Under
    --output json: one JSON line per update."""

    async def body(session: Session) -> int:
        return await watch_run(session, names.run(run, session.namespace))

    execute(body)


async def _outputs(session: Session, run: str) -> list[executor_pb.Output]:
    """The run's outputs without their data (ListOutputs), oldest first."""
    request = executor_rpc.ListOutputsRequest(parent=run)
    return await collect(session, session.executor.ListOutputs, request, "outputs", 0)


@runs.command("outputs")
@click.argument("run")
def outputs(run: str) -> None:
    """The outputs RUN kept (name, size, truncated), oldest first; `runs logs` prints them."""

    async def body(session: Session) -> None:
        items = await _outputs(session, names.run(run, session.namespace))
        out = render.table("OUTPUT", "NAME", "BYTES", "TRUNCATED", "CREATED")
        for item in items:
            render.row(
                out,
                render.last_segment(item.name),
                item.display_name,
                item.size_bytes,
                "yes" if item.truncated else "no",
                render.when(item, "create_time"),
            )
        if session.options.json:
            render.print_json([_output_json(o, with_text=False) for o in items])
        else:
            render.emit_list(session.options, items, out, "the run kept no output")

    execute(body)


@runs.command("logs")
@click.argument("run")
@click.option(
    "--name",
    "only",
    multiple=True,
    help='only the output of this name, e.g. "iteration 1 stderr" (repeat for several)',
)
def logs(run: str, only: tuple[str, ...]) -> None:
    """What RUN printed and kept (stdout and stderr of each iteration, check output,
    a task's traceback), decoded as UTF-8 text, oldest first."""

    async def body(session: Session) -> None:
        name = names.run(run, session.namespace)
        listed = [o for o in await _outputs(session, name) if not only or o.display_name in only]
        kept = []
        for item in listed:
            got = await session.call(
                session.executor.GetOutput, executor_rpc.GetOutputRequest(name=item.name)
            )
            kept.append(got.output)
        if session.options.json:
            render.print_json([_output_json(o) for o in kept])
            return
        if not kept:
            render.console(stderr=True).print("[dim]the run kept no output[/]")
        for output in kept:
            _print_output(output)

    execute(body)


def _output_json(output: executor_pb.Output, with_text: bool = True) -> dict[str, object]:
    data = render.message_json(output)
    data.pop("data", None)
    if with_text:
        data["text"] = output.data.decode("utf-8", "replace")
    return data


def _print_output(output: executor_pb.Output) -> None:
    note = f"{output.size_bytes} bytes" + (", truncated" if output.truncated else "")
    render.console().print(render.Text(f"== {output.display_name} ({note}) ==", style="bold"))
    text = output.data.decode("utf-8", "replace")
    sys.stdout.write(text if text.endswith("\n") or not text else text + "\n")  # as it was
    sys.stdout.flush()


@runs.command("abort")
@click.argument("run")
@click.option("--reason", required=True, help="why (recorded with the run)")
def abort(run: str, reason: str) -> None:
    """Abort a running RUN: calls are cancelled, processes killed; it ends ABORTED."""

    async def body(session: Session) -> None:
        name = names.run(run, session.namespace)
        reply = await session.call(
            session.executor.AbortRun, executor_rpc.AbortRunRequest(name=name, reason=reason)
        )
        render.done(session.options, reply.run, f"run {name}: abort requested ({reason})")

    execute(body)
