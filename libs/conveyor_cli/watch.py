"""Following a run live: ExecutorService.WatchRun drawn as a Rich progress bar (or JSON
lines), until the run ends; the exit code says how it ended.

A run exists once an executor leased its work order. `jobs run --watch` and `submit
--watch` know the order, so they first wait while it is queued (a spinner), then watch.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from conveyor.common.v1 import types_pb2
from conveyor.executor.v1 import messages_pb2 as executor_pb
from conveyor.executor.v1 import service_pb2 as executor_rpc
from conveyor.queue.v1 import messages_pb2 as queue_pb
from conveyor.queue.v1 import service_pb2 as queue_rpc
from conveyor_cli import render
from conveyor_cli.session import CommandFailed, Exit, Session

TERMINAL = {
    executor_pb.RUN_STATE_SUCCEEDED,
    executor_pb.RUN_STATE_FAILED,
    executor_pb.RUN_STATE_ABORTED,
}
ORDER_DONE = {
    queue_pb.WORK_ORDER_STATE_SUCCEEDED,
    queue_pb.WORK_ORDER_STATE_FAILED,
    queue_pb.WORK_ORDER_STATE_CANCELLED,
    queue_pb.WORK_ORDER_STATE_DEAD,
}
#: How often a queued order is looked at while waiting for its run to start.
QUEUED_POLL_SECONDS = 0.25


def failure_text(failure: types_pb2.Failure) -> str:
    kind = failure.type or "failure"
    return f"{kind}: {failure.message}" if failure.message else kind


def run_outcome(run: executor_pb.Run) -> int:
    return int(Exit.OK if run.state == executor_pb.RUN_STATE_SUCCEEDED else Exit.RUN_FAILED)


async def wait_for_run(session: Session, run: str, work_order: str) -> bool:
    """Wait while `work_order` is queued; True once its run exists, False if the order
    ended without one (cancelled before it ran, for example)."""
    status = None
    if not session.options.json:
        status = render.console(stderr=True).status(f"{work_order}: queued")
        status.start()
    try:
        while True:
            try:
                await session.call(session.executor.GetRun, executor_rpc.GetRunRequest(name=run))
                return True
            except grpc.aio.AioRpcError as error:  # the others become typed errors later
                if error.code() != grpc.StatusCode.NOT_FOUND:
                    raise
            order = await session.call(
                session.queue.GetWorkOrder, queue_rpc.GetWorkOrderRequest(name=work_order)
            )
            if order.work_order.state in ORDER_DONE:
                return False
            await asyncio.sleep(QUEUED_POLL_SECONDS)
    finally:
        if status is not None:
            status.stop()


async def watch_run(session: Session, run: str) -> int:
    """Follow `run` until it ends; its exit code (0 succeeded, 4 failed or aborted)."""
    request = executor_rpc.WatchRunRequest(name=run)
    if session.options.json:
        return await _watch_json(session, request)
    return await _watch_progress(session, request)


async def _watch_json(session: Session, request: executor_rpc.WatchRunRequest) -> int:
    last: executor_pb.Run | None = None
    async for response in session.stream(session.executor.WatchRun, request):
        kind = response.update.WhichOneof("update")
        if kind is None:
            continue
        render.print_json({kind: render.message_json(getattr(response.update, kind))}, lines=True)
        if kind == "run":
            last = response.update.run
    return _ended(last, request.name)


def _ended(last: executor_pb.Run | None, name: str) -> int:
    if last is None or last.state not in TERMINAL:
        raise CommandFailed(f"the watch of {name} ended before the run did", Exit.UNAVAILABLE)
    return run_outcome(last)


async def _watch_progress(session: Session, request: executor_rpc.WatchRunRequest) -> int:
    console = render.console()
    progress = Progress(
        SpinnerColumn(finished_text="•"),
        TextColumn("{task.fields[state]}", markup=True),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[message]}", markup=False),
        TimeElapsedColumn(),
        console=console,
    )
    last: executor_pb.Run | None = None
    with progress:
        task = progress.add_task(request.name, total=100, state="[yellow]pending[/]", message="")
        async for response in session.stream(session.executor.WatchRun, request):
            update = response.update
            kind = update.WhichOneof("update")
            if kind == "run":
                if last is None:
                    progress.console.print(_heading(update.run))
                last = update.run
                _show_run(progress, task, last)
            elif kind == "progress":
                _show_progress(progress, task, update.progress)
            elif kind == "step":
                progress.console.print(_step_line(update.step))
        if last is not None and last.state == executor_pb.RUN_STATE_SUCCEEDED:
            progress.update(task, completed=100)
        progress.stop_task(task)
    code = _ended(last, request.name)
    assert last is not None
    console.print(_final_line(last))
    return code


def _heading(run: executor_pb.Run) -> Text:
    text = Text("run ", style="bold").append(run.name)
    if run.job:
        text.append(f" of {run.job} v{run.job_version}")
    return text.append(f" ({render.short_enum(run, 'kind')})", style="dim")


def _show_run(progress: Progress, task: Any, run: executor_pb.Run) -> None:
    word = render.short_enum(run, "state")
    style = render.STATE_STYLES.get(word, "")
    attempt = f" attempt {run.attempts[-1].number}" if run.attempts else ""
    fields: dict[str, Any] = {"state": f"[{style}]{word}[/]{attempt}" if style else word}
    if run.HasField("progress"):
        fields["completed"] = run.progress.percent
        fields["message"] = run.progress.message
    progress.update(task, **fields)


def _show_progress(progress: Progress, task: Any, update: executor_pb.RunProgress) -> None:
    progress.update(task, completed=update.percent, message=update.message)


def _step_line(step: executor_pb.RunStep) -> Text:
    line = Text("  ").append(step.status or "-", style=render.STATE_STYLES.get(step.status, ""))
    line.append(f"  {step.display_name}").append(f" ({step.kind})", style="dim")
    if step.HasField("failure"):
        line.append(f"  {failure_text(step.failure)}", style="red")
    return line


def _final_line(run: executor_pb.Run) -> Text:
    word = render.short_enum(run, "state")
    line = Text(f"run {run.name} ").append(word, style=render.STATE_STYLES.get(word, "bold"))
    if run.summary:
        line.append(f": {run.summary}")
    if run.HasField("failure"):
        line.append(f": {failure_text(run.failure)}", style="red")
    return line
