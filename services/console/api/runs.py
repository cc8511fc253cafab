"""JSON API: runs (filters, detail, steps, outputs, progress) and abort."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from conveyor.executor.v1 import messages_pb2 as xm
from conveyor.executor.v1 import service_pb2 as x
from conveyor_console import convert
from conveyor_console.web import CallerDep, ReasonBody, bad_request

router = APIRouter(tags=["runs"])

#: Run states that end a run: the pages stop refreshing.
FINAL_STATES = {"SUCCEEDED", "FAILED", "ABORTED"}


def _run_name(ns: str, run: str) -> str:
    return f"namespaces/{ns}/runs/{run}"


def _run(message: Any) -> dict[str, Any]:
    run = convert.message(message)
    assert run is not None
    run["id"] = convert.leaf(message.name)
    run["final"] = run["state"] in FINAL_STATES
    return run


@router.get("/namespaces/{ns}/runs", summary="Runs, newest first, with filters")
async def list_runs(
    ns: str,
    call: CallerDep,
    state: Annotated[
        list[str] | None, Query(description="PENDING, RUNNING, SUCCEEDED, FAILED, ABORTED")
    ] = None,
    job: str = Query("", description="A job id (or its resource name)."),
    schedule: str = Query("", description="A schedule's resource name."),
    work_order: str = Query("", description="A work order's resource name."),
    page_token: str = "",
    page_size: int = Query(50, ge=1, le=1000),
) -> dict[str, Any]:
    states: list[Any] = []  # enum numbers
    for value in state or []:
        number = convert.enum_number(xm.RunState.DESCRIPTOR, value)
        if number is None:
            raise bad_request("state", f"unknown run state {value!r}")
        states.append(number)
    if job and "/" not in job:
        job = f"namespaces/{ns}/jobs/{job}"
    reply = await call(
        "executor",
        "ListRuns",
        x.ListRunsRequest(
            parent=f"namespaces/{ns}",
            job=job,
            states=states,
            work_order=work_order,
            schedule=schedule,
            page_size=page_size,
            page_token=page_token,
        ),
    )
    return {"runs": [_run(r) for r in reply.runs], "next_page_token": reply.next_page_token}


@router.get("/namespaces/{ns}/runs/{run}", summary="A run: state, attempts, progress, failure")
async def get_run(ns: str, run: str, call: CallerDep) -> dict[str, Any]:
    reply = await call("executor", "GetRun", x.GetRunRequest(name=_run_name(ns, run)))
    return {"run": _run(reply.run)}


@router.get("/namespaces/{ns}/runs/{run}/steps", summary="A run's steps (HTTP calls, outputs...)")
async def list_steps(ns: str, run: str, call: CallerDep, page_token: str = "") -> dict[str, Any]:
    reply = await call(
        "executor",
        "ListRunSteps",
        x.ListRunStepsRequest(parent=_run_name(ns, run), page_size=500, page_token=page_token),
    )
    detail = await call("executor", "GetRun", x.GetRunRequest(name=_run_name(ns, run)))
    steps = convert.messages(reply.steps)
    return {
        "steps": steps,
        "outputs": convert.output_refs(convert.message(detail.run) or {}, steps),
        "next_page_token": reply.next_page_token,
    }


@router.get("/namespaces/{ns}/runs/{run}/outputs/{output}", summary="One output, decoded as text")
async def get_output(ns: str, run: str, output: str, call: CallerDep) -> dict[str, Any]:
    name = f"{_run_name(ns, run)}/outputs/{output}"
    reply = await call("executor", "GetOutput", x.GetOutputRequest(name=name))
    out = convert.message(reply.output)
    assert out is not None
    out["text"] = reply.output.data.decode("utf-8", errors="replace")
    out.pop("data", None)
    return {"output": out}


@router.post("/namespaces/{ns}/runs/{run}/abort", summary="Abort a run (reason required)")
async def abort_run(ns: str, run: str, body: ReasonBody, call: CallerDep) -> dict[str, Any]:
    reply = await call(
        "executor", "AbortRun", x.AbortRunRequest(name=_run_name(ns, run), reason=body.reason)
    )
    return {"run": _run(reply.run)}
