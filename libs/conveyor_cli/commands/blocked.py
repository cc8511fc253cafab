"""`conveyor blocked list`, `conveyor resolve` and `conveyor mutations list`.

A consumer run whose one side effect has an unknown outcome (the call's answer was lost
and its reconcile hook could not tell) is SUSPENDED until a person says what happened:

    conveyor blocked list                                  # each with its prompt
    conveyor resolve 0d3c... applied --reason "seen in the payment dashboard" \\
        --result '{"charge_id": "ch_1"}'
    conveyor resolve 0d3c... failed --reason "no charge in the dashboard"  # mutate again
    conveyor resolve 0d3c... skip --reason "refunded by hand"              # next, skipped

Resolving needs the operator role; the reason is required and recorded with who.
"""

from __future__ import annotations

import json
from typing import Any

import click

from conveyor.executor.v1 import workflow_pb2 as wf
from conveyor_cli import documents, names, render
from conveyor_cli.commands.common import collect, limit_option
from conveyor_cli.commands.events import who
from conveyor_cli.commands.workflows import handler_runs_table, phase_cell, usage_text
from conveyor_cli.session import Session, execute
from conveyor_cli.watch import failure_text

RESOLUTIONS = {
    "applied": wf.RESOLUTION_APPLIED,
    "failed": wf.RESOLUTION_FAILED,
    "skip": wf.RESOLUTION_SKIP,
}
MUTATION_STATES = {
    wf.MutationState.Name(number).removeprefix("MUTATION_STATE_").lower(): number
    for number in wf.MutationState.values()
    if number
}


def _json_text(value: str) -> str:
    """A JSON string of the API, compact for a table cell."""
    if not value:
        return "-"
    try:
        return json.dumps(json.loads(value), ensure_ascii=False)
    except ValueError:
        return value


@click.group()
def blocked() -> None:
    """Blocked runs: handler runs suspended on a mutation of unknown outcome."""


@blocked.command("list")
@click.option("--workflow", help="only runs of this workflow")
@limit_option()
def list_blocked(workflow: str | None, limit: int) -> None:
    """Suspended handler runs, newest first, each with the prompt a person must answer
    (then `conveyor resolve RUN applied|failed|skip --reason WHY`)."""

    async def body(session: Session) -> None:
        request = wf.ListHandlerRunsRequest(
            parent=session.parent,
            workflow=names.workflow_id(workflow) if workflow else "",
            phases=[wf.HANDLER_PHASE_SUSPENDED],
        )
        items = await collect(
            session, session.workflows.ListHandlerRuns, request, "handler_runs", limit
        )
        out = render.table("HANDLER RUN", "WORKFLOW", "HANDLER", "EVENTS", "SINCE", "PROMPT")
        for run in items:
            render.row(
                out,
                render.last_segment(run.name),
                run.workflow,
                run.handler,
                ", ".join(e.title or render.last_segment(e.name) for e in run.events) or "-",
                render.when(run, "update_time"),
                run.prompt,
            )
        render.emit_list(session.options, items, out, "no blocked runs")

    execute(body)


def mutation_rows(mutation: wf.Mutation) -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = [
        ("mutation", phase_cell(mutation, "state")),
        ("attempts", mutation.attempts),
    ]
    if mutation.result_json:
        rows.append(("result", _json_text(mutation.result_json)))
    if mutation.HasField("failure"):
        rows.append(("failure", failure_text(mutation.failure)))
    if mutation.reconciled:
        rows.append(("reconciled", mutation.reconciled))
    if mutation.resolution:
        rows += [
            ("resolution", render.short_enum(mutation, "resolution")),
            ("resolved by", mutation.resolved_by),
            ("reason", mutation.resolution_reason),
            ("resolved", render.when(mutation, "resolve_time")),
        ]
    return rows


def show_handler_run(session: Session, reply: wf.GetHandlerRunResponse) -> None:
    """A handler run and its mutation (GetHandlerRun's answer), for people or as JSON."""
    if session.options.json:
        out: dict[str, Any] = {"handler_run": render.message_json(reply.handler_run)}
        if reply.HasField("mutation"):
            out["mutation"] = render.message_json(reply.mutation)
        render.print_json(out)
        return
    run = reply.handler_run
    rows: list[tuple[str, Any]] = [
        ("name", run.name),
        ("workflow", run.workflow),
        ("handler", f"{run.handler} ({render.short_enum(run, 'kind')})"),
        ("phase", phase_cell(run, "phase")),
        ("session", run.session),
    ]
    for event in run.events:
        rows.append(("event", f"{event.name} {event.title}".strip()))
    if run.prompt:
        rows.append(("prompt", run.prompt))
    if run.prepared_json:
        rows.append(("prepared", _json_text(run.prepared_json)))
    if run.mutation_result.kind:
        value = _json_text(run.mutation_result.value_json)
        rows.append(("result", f"{run.mutation_result.kind} {value}"))
    if run.HasField("failure"):
        rows.append(("failure", failure_text(run.failure)))
    rows += [
        ("published", run.events_published),
        ("usage", usage_text(run.usage)),
        ("code version", run.code_version),
        ("created", render.when(run, "create_time")),
        ("ended", render.when(run, "end_time")),
    ]
    if reply.HasField("mutation"):
        rows += mutation_rows(reply.mutation)
    render.show(render.details(rows))


@click.command("resolve")
@click.argument("handler_run")
@click.argument("resolution", type=click.Choice(list(RESOLUTIONS)))
@click.option("--reason", required=True, help="why (required; recorded with who resolved it)")
@click.option("--result", "result_text", help="applied: what the call returned, JSON (@file)")
@click.option("--resolved-by", default=who, show_default="user@host", help="who resolves it")
def resolve(
    handler_run: str, resolution: str, reason: str, result_text: str | None, resolved_by: str
) -> None:
    """Settle the unknown mutation of a blocked HANDLER_RUN, and let it go on:

    \b
    applied  it happened: `next` runs with the result (--result JSON)
    failed   it did not happen: `mutate` runs again
    skip     leave it: `next` runs with `skipped`

    Needs the operator role."""
    if not reason.strip():
        raise click.BadParameter("say why", param_hint="--reason")
    if result_text is not None and resolution != "applied":
        raise click.BadParameter("only with `applied`", param_hint="--result")
    result = documents.json_value(result_text, "--result") if result_text is not None else None

    async def body(session: Session) -> None:
        name = names.handler_run(handler_run, session.namespace)
        reply = await session.call(
            session.workflows.ResolveMutation,
            wf.ResolveMutationRequest(
                name=name,
                resolution=RESOLUTIONS[resolution],
                result_json="" if result_text is None else json.dumps(result),
                reason=reason,
                resolved_by=resolved_by,
            ),
        )
        if session.options.json:
            render.print_json(
                {
                    "handler_run": render.message_json(reply.handler_run),
                    "mutation": render.message_json(reply.mutation),
                }
            )
            return
        by = reply.mutation.resolved_by or resolved_by
        render.console().print(
            render.Text(
                f"handler run {name}: resolved {resolution} by {by} ({reason}); "
                f"now {render.short_enum(reply.handler_run, 'phase')}"
            )
        )

    execute(body)


@click.group()
def mutations() -> None:
    """The mutation ledger: each consumer run's one side effect and its outcome."""


@mutations.command("list")
@click.option("--workflow", help="only mutations of this workflow")
@click.option("--run", "handler_run", help="only the mutation of this handler run")
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice(list(MUTATION_STATES)),
    help="only mutations in this state (repeat for several)",
)
@limit_option()
def list_mutations(
    workflow: str | None, handler_run: str | None, states: tuple[str, ...], limit: int
) -> None:
    """Mutations, newest first: state, attempts, result or failure, how it was
    reconciled or resolved (by whom and why)."""

    async def body(session: Session) -> None:
        items: list[wf.Mutation]
        if handler_run:
            name = names.handler_run(handler_run, session.namespace)
            reply = await session.call(
                session.workflows.GetHandlerRun, wf.GetHandlerRunRequest(name=name)
            )
            wanted = {MUTATION_STATES[s] for s in states}
            found = reply.mutation if reply.HasField("mutation") else None
            items = [found] if found is not None and (not wanted or found.state in wanted) else []
        else:
            request = wf.ListMutationsRequest(
                parent=session.parent,
                workflow=names.workflow_id(workflow) if workflow else "",
                states=[MUTATION_STATES[s] for s in states],
            )
            items = await collect(
                session, session.workflows.ListMutations, request, "mutations", limit
            )
        out = render.table(
            "HANDLER RUN", "WORKFLOW", "HANDLER", "STATE", "ATTEMPTS", "OUTCOME", "RESOLVED BY",
            "STARTED",
        )  # fmt: skip
        for m in items:
            outcome = _json_text(m.result_json) if m.result_json else ""
            if m.HasField("failure"):
                outcome = failure_text(m.failure)
            if m.resolution:
                outcome = f"{render.short_enum(m, 'resolution')}: {m.resolution_reason}"
            render.row(
                out,
                render.last_segment(m.handler_run),
                m.workflow,
                m.handler,
                phase_cell(m, "state"),
                m.attempts,
                outcome,
                m.resolved_by,
                render.when(m, "start_time"),
            )
        render.emit_list(session.options, items, out, "no mutations match")

    execute(body)


__all__ = ["blocked", "handler_runs_table", "mutations", "resolve", "show_handler_run"]
