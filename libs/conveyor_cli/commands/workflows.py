"""`conveyor workflows ...` and `conveyor sessions ...`: the executor's WorkflowService.

    conveyor workflows list                       # registered workflows, paused or not
    conveyor workflows get shop                   # handlers, budgets, usage
    conveyor workflows pause shop --reason "..."  # its sessions end at once
    conveyor workflows trigger shop poll_orders   # fire a handler's schedule now
    conveyor workflows runs shop --phase suspended
    conveyor sessions list shop                   # newest first, with budgets and outcome

Blocked runs, `resolve` and the mutation ledger are in commands/blocked.py.
"""

from __future__ import annotations

from typing import Any

import click

from conveyor.executor.v1 import workflow_pb2 as wf
from conveyor.scheduler.v1 import service_pb2 as scheduler_rpc
from conveyor_cli import names, render
from conveyor_cli.commands.common import collect, limit_option
from conveyor_cli.commands.events import who
from conveyor_cli.session import CommandFailed, Exit, Session, execute
from conveyor_cli.watch import failure_text

PHASES = {
    wf.HandlerPhase.Name(number).removeprefix("HANDLER_PHASE_").lower(): number
    for number in wf.HandlerPhase.values()
    if number
}
STATES_STYLE = {
    "committed": "succeeded",
    "completed": "succeeded",
    "completed_with_remaining_work": "pending",
    "suspended": "paused",
    "executing": "running",
    "mutating": "running",
}


def phase_cell(message: Any, field: str) -> render.Text:
    text = render.short_enum(message, field)
    styled = render.state(STATES_STYLE.get(text, text))
    return render.Text(text, style=styled.style)


def usage_text(usage: Any) -> str:
    if not (usage.input_tokens or usage.output_tokens or usage.cost_usd):
        return "-"
    return f"{usage.input_tokens}/{usage.output_tokens} tok, ${usage.cost_usd:.4f}"


def budget_text(workflow: wf.Workflow) -> str:
    parts = [f"{workflow.iteration_budget} iterations" if workflow.iteration_budget else ""]
    if workflow.cost_budget_usd:
        parts.append(f"${workflow.cost_budget_usd:.2f}")
    return ", ".join(p for p in parts if p) or "none"


def kind_counts(workflow: wf.Workflow) -> str:
    kinds = [render.short_enum(h, "kind") for h in workflow.handlers]
    return f"{kinds.count('producer')} producer(s), {kinds.count('consumer')} consumer(s)"


@click.group()
def workflows() -> None:
    """Workflows: list, get, pause, resume, trigger a handler, its handler runs."""


@workflows.command("list")
def list_workflows() -> None:
    """The workflows registered in the namespace (by the workers hosting them)."""

    async def body(session: Session) -> None:
        reply = await session.call(
            session.workflows.ListWorkflows, wf.ListWorkflowsRequest(parent=session.parent)
        )
        items = list(reply.workflows)
        out = render.table("WORKFLOW", "STATE", "QUEUE", "HANDLERS", "BUDGET", "CODE", "UPDATED")
        for item in items:
            render.row(
                out,
                render.last_segment(item.name),
                render.state("paused" if item.paused else "running"),
                item.queue,
                kind_counts(item),
                budget_text(item),
                item.code_version,
                render.when(item, "update_time"),
            )
        render.emit_list(session.options, items, out, f"no workflows in {session.parent}")

    execute(body)


async def get_workflow(session: Session, name: str) -> wf.Workflow:
    reply = await session.call(session.workflows.GetWorkflow, wf.GetWorkflowRequest(name=name))
    return reply.workflow


def workflow_rows(item: wf.Workflow) -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = [
        ("name", item.name),
        ("state", render.state("paused" if item.paused else "running")),
    ]
    if item.paused:
        rows.append(("paused by", f"{item.paused_by or '-'}: {item.pause_reason or 'no reason'}"))
    rows += [
        ("queue", item.queue),
        ("code version", item.code_version),
        ("iteration budget", item.iteration_budget or "none"),
        ("cost budget", f"${item.cost_budget_usd:.2f}" if item.cost_budget_usd else "none"),
        ("usage", usage_text(item.usage)),
        ("registered", render.when(item, "register_time")),
        ("updated", render.when(item, "update_time")),
    ]
    return rows


@workflows.command("get")
@click.argument("workflow")
def get(workflow: str) -> None:
    """One workflow: state, budgets, usage, and its producers and consumers."""

    async def body(session: Session) -> None:
        item = await get_workflow(session, names.workflow(workflow, session.namespace))
        handlers = render.table("HANDLER", "KIND", "TOPIC", "BATCH", "SCHEDULE", title="handlers")
        for h in item.handlers:
            render.row(
                handlers,
                h.handler,
                render.short_enum(h, "kind"),
                render.last_segment(h.topic) if h.topic else "-",
                h.batch or "-",
                h.schedule,
            )
        summary = render.details(workflow_rows(item))
        render.emit(session.options, render.message_json(item), summary, handlers)

    execute(body)


@workflows.command("pause")
@click.argument("workflow")
@click.option("--reason", default="", help="why (recorded with the workflow)")
@click.option("--paused-by", default=who, show_default="user@host", help="who pauses it")
def pause(workflow: str, reason: str, paused_by: str) -> None:
    """Pause WORKFLOW: its sessions end at once without running a handler."""

    async def body(session: Session) -> None:
        name = names.workflow(workflow, session.namespace)
        reply = await session.call(
            session.workflows.PauseWorkflow,
            wf.PauseWorkflowRequest(name=name, reason=reason, paused_by=paused_by),
        )
        render.done(session.options, reply.workflow, f"workflow {name} paused")

    execute(body)


@workflows.command("resume")
@click.argument("workflow")
def resume(workflow: str) -> None:
    """Resume WORKFLOW; a session starts for the work that waits."""

    async def body(session: Session) -> None:
        name = names.workflow(workflow, session.namespace)
        reply = await session.call(
            session.workflows.ResumeWorkflow, wf.ResumeWorkflowRequest(name=name)
        )
        render.done(session.options, reply.workflow, f"workflow {name} resumed")

    execute(body)


@workflows.command("trigger")
@click.argument("workflow")
@click.argument("handler")
def trigger(workflow: str, handler: str) -> None:
    """Run HANDLER of WORKFLOW now: fires the handler's schedule (a producer's timer, a
    consumer's on-event schedule) outside its times; prints the fire."""

    async def body(session: Session) -> None:
        item = await get_workflow(session, names.workflow(workflow, session.namespace))
        found = next((h for h in item.handlers if h.handler == handler), None)
        if found is None:
            known = ", ".join(h.handler for h in item.handlers) or "none"
            raise CommandFailed(
                f"workflow {item.name} has no handler {handler!r} (its handlers: {known})",
                Exit.NOT_FOUND,
            )
        if not found.schedule:
            raise CommandFailed(f"handler {handler!r} has no schedule to fire (yet)")
        reply = await session.call(
            session.scheduler.TriggerSchedule,
            scheduler_rpc.TriggerScheduleRequest(name=found.schedule),
        )
        render.done(session.options, reply.fire, f"{item.name} {handler}: fired {reply.fire.name}")

    execute(body)


def handler_runs_table(items: list[wf.HandlerRun], title: str | None = None) -> render.Table:
    out = render.table(
        "HANDLER RUN", "WORKFLOW", "HANDLER", "PHASE", "EVENTS", "STARTED", "DETAIL", title=title
    )
    for run in items:
        detail = run.prompt or (failure_text(run.failure) if run.HasField("failure") else "")
        if not detail and run.mutation_result.kind:
            detail = f"mutation {run.mutation_result.kind}"
        render.row(
            out,
            render.last_segment(run.name),
            run.workflow,
            run.handler,
            phase_cell(run, "phase"),
            ", ".join(e.title or render.last_segment(e.name) for e in run.events) or "-",
            render.when(run, "create_time"),
            detail,
        )
    return out


@workflows.command("runs")
@click.argument("workflow", required=False)
@click.option(
    "--phase",
    "phases",
    multiple=True,
    type=click.Choice(list(PHASES)),
    help="only runs in this phase (repeat for several)",
)
@click.option("--session", "session_id", help="only runs of this session (id or name)")
@limit_option()
def runs(workflow: str | None, phases: tuple[str, ...], session_id: str | None, limit: int) -> None:
    """Handler runs (one producer or consumer run each), newest first; of WORKFLOW, or
    of every workflow of the namespace."""

    async def body(session: Session) -> None:
        request = wf.ListHandlerRunsRequest(
            parent=session.parent,
            workflow=names.workflow_id(workflow) if workflow else "",
            phases=[PHASES[p] for p in phases],
            session=names.session(session_id, session.namespace) if session_id else "",
        )
        items = await collect(
            session, session.workflows.ListHandlerRuns, request, "handler_runs", limit
        )
        render.emit_list(session.options, items, handler_runs_table(items), "no handler runs match")

    execute(body)


@workflows.command("run")
@click.argument("handler_run")
def handler_run(handler_run: str) -> None:
    """One handler run: phase, events, prepared value, its mutation and prompt."""
    from conveyor_cli.commands.blocked import show_handler_run  # beside resolve

    async def body(session: Session) -> None:
        name = names.handler_run(handler_run, session.namespace)
        reply = await session.call(
            session.workflows.GetHandlerRun, wf.GetHandlerRunRequest(name=name)
        )
        show_handler_run(session, reply)

    execute(body)


# -- sessions ----------------------------------------------------------------------------


@click.group()
def sessions() -> None:
    """Sessions of a workflow: list (with budgets, usage and outcome), get."""


def _budget(used: int, budget: int) -> str:
    """Iterations against the workflow's budget: "2/2"."""
    return f"{used}/{budget}" if budget else str(used)


@sessions.command("list")
@click.argument("workflow")
@limit_option()
def list_sessions(workflow: str, limit: int) -> None:
    """Sessions of WORKFLOW, newest first: state, trigger, iterations against the
    workflow's budget, usage and cost, summary."""

    async def body(session: Session) -> None:
        name = names.workflow(workflow, session.namespace)
        item = await get_workflow(session, name)
        request = wf.ListSessionsRequest(parent=name)
        items = await collect(session, session.workflows.ListSessions, request, "sessions", limit)
        out = render.table(
            "SESSION", "STATE", "TRIGGER", "ITERATIONS", "RUNS", "USAGE", "STARTED", "ENDED",
            "SUMMARY",
        )  # fmt: skip
        for found in items:
            cost = f"${found.usage.cost_usd:.4f}"
            if item.cost_budget_usd:
                cost += f"/${item.cost_budget_usd:.2f}"
            render.row(
                out,
                render.last_segment(found.name),
                phase_cell(found, "state"),
                found.trigger or "follow-up/resume",
                _budget(found.iterations, item.iteration_budget),
                found.handler_runs,
                f"{found.usage.input_tokens}/{found.usage.output_tokens} tok, {cost}",
                render.when(found, "start_time"),
                render.when(found, "end_time"),
                found.summary,
            )
        render.emit_list(session.options, items, out, f"no sessions of {name}")

    execute(body)


@sessions.command("get")
@click.argument("session_name", metavar="SESSION")
def get_session(session_name: str) -> None:
    """One session: state, budgets and what it used, follow-up, its run and handler runs."""

    async def body(session: Session) -> None:
        name = names.session(session_name, session.namespace)
        found = (
            await session.call(session.workflows.GetSession, wf.GetSessionRequest(name=name))
        ).session
        if session.options.json:
            render.print_json(render.message_json(found))
            return
        item = await get_workflow(
            session, f"namespaces/{names.namespace_of(found.name)}/workflows/{found.workflow}"
        )
        rows: list[tuple[str, Any]] = [
            ("name", found.name),
            ("workflow", found.workflow),
            ("state", phase_cell(found, "state")),
            ("trigger", found.trigger or "follow-up or resume"),
            ("iterations", _budget(found.iterations, item.iteration_budget)),
            ("handler runs", found.handler_runs),
            ("usage", usage_text(found.usage)),
            ("cost budget", f"${item.cost_budget_usd:.2f}" if item.cost_budget_usd else "none"),
            ("code version", found.code_version),
            ("started", render.when(found, "start_time")),
            ("ended", render.when(found, "end_time")),
            ("summary", found.summary),
            ("follow-up", found.follow_up),
            ("run", found.run),
        ]
        request = wf.ListHandlerRunsRequest(parent=session.parent, session=found.name)
        items = await collect(
            session, session.workflows.ListHandlerRuns, request, "handler_runs", 0
        )
        render.show(render.details(rows))
        if items:
            render.show(handler_runs_table(items, title="handler runs"))

    execute(body)
