"""JSON API: schedules with their next fires, fire history (skipped and missed slots too)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from conveyor.scheduler.v1 import service_pb2 as s
from conveyor_console import convert
from conveyor_console.web import CallerDep
from conveyor_sdk._errors import ConveyorError

router = APIRouter(tags=["schedules"])


def _schedule(message: Any) -> dict[str, Any]:
    row = convert.message(message)
    assert row is not None
    parts = message.name.split("/")  # namespaces/{ns}/jobs/{job}/schedules/{schedule}
    row["job"], row["id"] = parts[3], parts[5]
    return row


@router.get("/namespaces/{ns}/schedules", summary="Every schedule of a namespace")
async def list_schedules(ns: str, call: CallerDep, page_token: str = "") -> dict[str, Any]:
    reply = await call(
        "scheduler",
        "ListSchedules",
        s.ListSchedulesRequest(
            parent=f"namespaces/{ns}/jobs/-", page_size=500, page_token=page_token
        ),
    )
    return {
        "schedules": [_schedule(x) for x in reply.schedules],
        "next_page_token": reply.next_page_token,
    }


@router.get(
    "/namespaces/{ns}/jobs/{job}/schedules/{schedule}",
    summary="A schedule, its next fire times and its fire history",
)
async def get_schedule(
    ns: str, job: str, schedule: str, call: CallerDep, next_fires: int = Query(5, ge=0, le=100)
) -> dict[str, Any]:
    name = _name(ns, job, schedule)
    reply = await call("scheduler", "GetSchedule", s.GetScheduleRequest(name=name))
    fires, preview = await call.gateway.gather(
        call("scheduler", "ListFires", s.ListFiresRequest(parent=name, page_size=100)),
        call("scheduler", "PreviewSchedule", s.PreviewScheduleRequest(name=name, count=next_fires)),
    )
    if isinstance(fires, ConveyorError):
        raise fires
    next_times = (
        []
        if isinstance(preview, ConveyorError) or not next_fires
        else [convert.timestamp(t) for t in preview.fire_times]
    )
    return {
        "schedule": _schedule(reply.schedule),
        "next_fires": next_times,
        "fires": convert.messages(fires.fires),
        "next_page_token": fires.next_page_token,
    }


def _name(ns: str, job: str, schedule: str) -> str:
    return f"namespaces/{ns}/jobs/{job}/schedules/{schedule}"


@router.post(
    "/namespaces/{ns}/jobs/{job}/schedules/{schedule}/pause",
    summary="Pause a schedule: it fires nothing until resumed",
)
async def pause_schedule(ns: str, job: str, schedule: str, call: CallerDep) -> dict[str, Any]:
    reply = await call(
        "scheduler", "PauseSchedule", s.PauseScheduleRequest(name=_name(ns, job, schedule))
    )
    return {"schedule": _schedule(reply.schedule)}


@router.post(
    "/namespaces/{ns}/jobs/{job}/schedules/{schedule}/resume",
    summary="Resume a schedule from now: slots that passed while paused are not fired",
)
async def resume_schedule(ns: str, job: str, schedule: str, call: CallerDep) -> dict[str, Any]:
    reply = await call(
        "scheduler", "ResumeSchedule", s.ResumeScheduleRequest(name=_name(ns, job, schedule))
    )
    return {"schedule": _schedule(reply.schedule)}


@router.post(
    "/namespaces/{ns}/jobs/{job}/schedules/{schedule}/trigger",
    summary="Fire a schedule now, outside its spec (its overlap policy does not apply)",
)
async def trigger_schedule(ns: str, job: str, schedule: str, call: CallerDep) -> dict[str, Any]:
    reply = await call(
        "scheduler", "TriggerSchedule", s.TriggerScheduleRequest(name=_name(ns, job, schedule))
    )
    return {"fire": convert.message(reply.fire)}
