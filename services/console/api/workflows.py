"""JSON API: workflows (producers, consumers), sessions, handler runs, blocked runs, resolve."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from conveyor.executor.v1 import workflow_pb2 as w
from conveyor_console import convert
from conveyor_console.web import ACTOR, CallerDep, ReasonBody, ResolveBody, bad_request

router = APIRouter(tags=["workflows"])

_RESOLUTIONS = {
    "applied": w.RESOLUTION_APPLIED,
    "failed": w.RESOLUTION_FAILED,
    "skip": w.RESOLUTION_SKIP,
}


def _with_id(message: Any) -> dict[str, Any]:
    row = convert.message(message)
    assert row is not None
    row["id"] = convert.leaf(message.name)
    return row


@router.get("/namespaces/{ns}/workflows", summary="Workflows with their producers and consumers")
async def list_workflows(ns: str, call: CallerDep) -> dict[str, Any]:
    reply = await call(
        "workflows", "ListWorkflows", w.ListWorkflowsRequest(parent=f"namespaces/{ns}")
    )
    return {"workflows": [_with_id(item) for item in reply.workflows]}


@router.get("/namespaces/{ns}/workflows/{workflow}", summary="A workflow and its latest sessions")
async def get_workflow(ns: str, workflow: str, call: CallerDep) -> dict[str, Any]:
    name = f"namespaces/{ns}/workflows/{workflow}"
    reply = await call("workflows", "GetWorkflow", w.GetWorkflowRequest(name=name))
    sessions = await call(
        "workflows", "ListSessions", w.ListSessionsRequest(parent=name, page_size=50)
    )
    return {
        "workflow": _with_id(reply.workflow),
        "sessions": [_with_id(s) for s in sessions.sessions],
        "next_page_token": sessions.next_page_token,
    }


@router.post(
    "/namespaces/{ns}/workflows/{workflow}/pause",
    summary="Pause a workflow: its sessions end at once without running a handler "
    "(reason required)",
)
async def pause_workflow(
    ns: str, workflow: str, body: ReasonBody, call: CallerDep
) -> dict[str, Any]:
    reply = await call(
        "workflows",
        "PauseWorkflow",
        w.PauseWorkflowRequest(
            name=f"namespaces/{ns}/workflows/{workflow}", reason=body.reason, paused_by=ACTOR
        ),
    )
    return {"workflow": _with_id(reply.workflow)}


@router.post(
    "/namespaces/{ns}/workflows/{workflow}/resume",
    summary="Resume a paused workflow: a session starts for the work that waited",
)
async def resume_workflow(ns: str, workflow: str, call: CallerDep) -> dict[str, Any]:
    reply = await call(
        "workflows",
        "ResumeWorkflow",
        w.ResumeWorkflowRequest(name=f"namespaces/{ns}/workflows/{workflow}"),
    )
    return {"workflow": _with_id(reply.workflow)}


@router.get("/namespaces/{ns}/sessions/{session}", summary="A session: budget use and result")
async def get_session(ns: str, session: str, call: CallerDep) -> dict[str, Any]:
    name = f"namespaces/{ns}/sessions/{session}"
    reply = await call("workflows", "GetSession", w.GetSessionRequest(name=name))
    runs = await call(
        "workflows",
        "ListHandlerRuns",
        w.ListHandlerRunsRequest(parent=f"namespaces/{ns}", session=name, page_size=200),
    )
    return {
        "session": _with_id(reply.session),
        "handler_runs": [_with_id(r) for r in runs.handler_runs],
    }


@router.get("/namespaces/{ns}/handler-runs", summary="Handler runs, by workflow and phase")
async def list_handler_runs(
    ns: str,
    call: CallerDep,
    workflow: str = "",
    phase: Annotated[
        list[str] | None, Query(description="PENDING, EXECUTING, ..., SUSPENDED")
    ] = None,
    page_token: str = "",
) -> dict[str, Any]:
    phases: list[Any] = []  # enum numbers
    for value in phase or []:
        number = convert.enum_number(w.HandlerPhase.DESCRIPTOR, value)
        if number is None:
            raise bad_request("phase", f"unknown handler phase {value!r}")
        phases.append(number)
    reply = await call(
        "workflows",
        "ListHandlerRuns",
        w.ListHandlerRunsRequest(
            parent=f"namespaces/{ns}",
            workflow=workflow,
            phases=phases,
            page_size=100,
            page_token=page_token,
        ),
    )
    return {
        "handler_runs": [_with_id(r) for r in reply.handler_runs],
        "next_page_token": reply.next_page_token,
    }


@router.get(
    "/namespaces/{ns}/blocked",
    summary="Blocked runs: suspended on a mutation a person must resolve",
)
async def list_blocked(ns: str, call: CallerDep) -> dict[str, Any]:
    reply = await call(
        "workflows",
        "ListHandlerRuns",
        w.ListHandlerRunsRequest(
            parent=f"namespaces/{ns}", phases=[w.HANDLER_PHASE_SUSPENDED], page_size=200
        ),
    )
    mutations = await call(
        "workflows",
        "ListMutations",
        w.ListMutationsRequest(
            parent=f"namespaces/{ns}", states=[w.MUTATION_STATE_INDETERMINATE], page_size=200
        ),
    )
    by_run = {m.handler_run: _with_id(m) for m in mutations.mutations}
    runs = []
    for item in reply.handler_runs:
        row = _with_id(item)
        row["mutation"] = by_run.get(item.name)
        runs.append(row)
    return {"blocked": runs}


@router.get("/namespaces/{ns}/handler-runs/{run}", summary="A handler run and its mutation")
async def get_handler_run(ns: str, run: str, call: CallerDep) -> dict[str, Any]:
    name = f"namespaces/{ns}/handlerRuns/{run}"
    reply = await call("workflows", "GetHandlerRun", w.GetHandlerRunRequest(name=name))
    mutation = _with_id(reply.mutation) if reply.HasField("mutation") else None
    return {"handler_run": _with_id(reply.handler_run), "mutation": mutation}


@router.post(
    "/namespaces/{ns}/handler-runs/{run}/resolve",
    summary="Resolve a blocked run's mutation: applied, failed or skip (reason required)",
)
async def resolve(ns: str, run: str, body: ResolveBody, call: CallerDep) -> dict[str, Any]:
    reply = await call(
        "workflows",
        "ResolveMutation",
        w.ResolveMutationRequest(
            name=f"namespaces/{ns}/handlerRuns/{run}",
            resolution=_RESOLUTIONS[body.resolution],
            result_json=body.result_json,
            reason=body.reason,
            resolved_by=ACTOR,
        ),
    )
    return {"handler_run": _with_id(reply.handler_run), "mutation": _with_id(reply.mutation)}
