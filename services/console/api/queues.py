"""JSON API: queues with their stats, work orders with their position, dead letters, redrive."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query

from conveyor.executor.v1 import service_pb2 as x
from conveyor.queue.v1 import messages_pb2 as qm
from conveyor.queue.v1 import service_pb2 as q
from conveyor_console import convert
from conveyor_console.web import ACTOR, CallerDep, RedriveBody, bad_request
from conveyor_sdk._errors import ConveyorError

router = APIRouter(tags=["queues"])


def _queue(ns: str, queue: str) -> str:
    return f"namespaces/{ns}/queues/{queue}"


def _states(values: list[str]) -> list[Any]:
    numbers: list[Any] = []  # enum numbers
    for value in values:
        number = convert.enum_number(qm.WorkOrderState.DESCRIPTOR, value)
        if number is None:
            raise bad_request("state", f"unknown work order state {value!r}")
        numbers.append(number)
    return numbers


def _stats(reply: Any) -> dict[str, Any] | None:
    if isinstance(reply, ConveyorError):
        return None
    stats = convert.message(reply.stats)
    assert stats is not None
    stats["depth_by_state"] = {d["state"]: d["count"] for d in stats.pop("depth")}
    return stats


@router.get("/namespaces/{ns}/queues", summary="Queues of a namespace with their stats")
async def list_queues(ns: str, call: CallerDep) -> dict[str, Any]:
    reply = await call(
        "queue", "ListQueues", q.ListQueuesRequest(parent=f"namespaces/{ns}", page_size=1000)
    )
    stats = await call.gateway.gather(
        *(
            call("queue", "GetQueueStats", q.GetQueueStatsRequest(name=item.name))
            for item in reply.queues
        )
    )
    queues = []
    for item, stat in zip(reply.queues, stats, strict=True):
        row = convert.message(item)
        assert row is not None
        row["id"] = convert.leaf(item.name)
        row["stats"] = _stats(stat)
        queues.append(row)
    return {"queues": queues}


@router.get("/namespaces/{ns}/queues/{queue}", summary="A queue's settings and stats")
async def get_queue(ns: str, queue: str, call: CallerDep) -> dict[str, Any]:
    name = _queue(ns, queue)
    reply = await call("queue", "GetQueue", q.GetQueueRequest(name=name))
    stats = await call("queue", "GetQueueStats", q.GetQueueStatsRequest(name=name))
    row = _queue_row(reply.queue)
    row["stats"] = _stats(stats)
    return {"queue": row}


def _queue_row(message: Any) -> dict[str, Any]:
    row = convert.message(message)
    assert row is not None
    row["id"] = convert.leaf(message.name)
    return row


@router.post(
    "/namespaces/{ns}/queues/{queue}/pause",
    summary="Pause a queue: it leases nothing until resumed; submits are still accepted",
)
async def pause_queue(ns: str, queue: str, call: CallerDep) -> dict[str, Any]:
    reply = await call("queue", "PauseQueue", q.PauseQueueRequest(name=_queue(ns, queue)))
    return {"queue": _queue_row(reply.queue)}


@router.post("/namespaces/{ns}/queues/{queue}/resume", summary="Resume leasing from a queue")
async def resume_queue(ns: str, queue: str, call: CallerDep) -> dict[str, Any]:
    reply = await call("queue", "ResumeQueue", q.ResumeQueueRequest(name=_queue(ns, queue)))
    return {"queue": _queue_row(reply.queue)}


@router.get("/namespaces/{ns}/queues/{queue}/work-orders", summary="Work orders of a queue")
async def list_work_orders(
    ns: str,
    queue: str,
    call: CallerDep,
    state: Annotated[
        list[str] | None, Query(description="QUEUED, LEASED, SUCCEEDED, FAILED, DEAD...")
    ] = None,
    error_type: str = "",
    page_token: str = "",
    page_size: int = Query(50, ge=1, le=1000),
) -> dict[str, Any]:
    reply = await call(
        "queue",
        "ListWorkOrders",
        q.ListWorkOrdersRequest(
            parent=_queue(ns, queue),
            states=_states(state or []),
            error_type=error_type,
            page_size=page_size,
            page_token=page_token,
            order=q.LIST_ORDER_NEWEST_FIRST,
        ),
    )
    return {
        "work_orders": convert.messages(reply.work_orders),
        "next_page_token": reply.next_page_token,
    }


@router.get(
    "/namespaces/{ns}/queues/{queue}/work-orders/{order}",
    summary="A work order with its position, state history and run",
)
async def get_work_order(ns: str, queue: str, order: str, call: CallerDep) -> dict[str, Any]:
    name = f"{_queue(ns, queue)}/workOrders/{order}"
    reply = await call("queue", "GetWorkOrder", q.GetWorkOrderRequest(name=name))
    position, history, runs = await call.gateway.gather(
        call("queue", "GetWorkOrderPosition", q.GetWorkOrderPositionRequest(name=name)),
        call(
            "queue", "ListWorkOrderEvents", q.ListWorkOrderEventsRequest(parent=name, page_size=200)
        ),
        call(
            "executor",
            "ListRuns",
            x.ListRunsRequest(parent=f"namespaces/{ns}", work_order=name, page_size=10),
        ),
    )
    return {
        "work_order": convert.message(reply.work_order),
        "position": None if isinstance(position, ConveyorError) else convert.message(position),
        "history": [] if isinstance(history, ConveyorError) else convert.messages(history.events),
        "runs": [] if isinstance(runs, ConveyorError) else convert.messages(runs.runs),
    }


@router.get("/namespaces/{ns}/queues/{queue}/dead-letters", summary="DEAD work orders of a queue")
async def list_dead_letters(
    ns: str, queue: str, call: CallerDep, error_type: str = "", page_token: str = ""
) -> dict[str, Any]:
    reply = await call(
        "queue",
        "ListWorkOrders",
        q.ListWorkOrdersRequest(
            parent=_queue(ns, queue),
            states=[qm.WORK_ORDER_STATE_DEAD],
            error_type=error_type,
            page_size=100,
            page_token=page_token,
            order=q.LIST_ORDER_NEWEST_FIRST,
        ),
    )
    redrives = await call(
        "queue", "ListRedrives", q.ListRedrivesRequest(parent=_queue(ns, queue), page_size=20)
    )
    return {
        "work_orders": convert.messages(reply.work_orders),
        "next_page_token": reply.next_page_token,
        "redrives": convert.messages(redrives.redrives),
    }


@router.post(
    "/namespaces/{ns}/queues/{queue}/redrive",
    summary="Move DEAD work orders back to QUEUED (reason required)",
)
async def redrive(ns: str, queue: str, body: RedriveBody, call: CallerDep) -> dict[str, Any]:
    reply = await call(
        "queue",
        "RedriveWorkOrders",
        q.RedriveWorkOrdersRequest(
            parent=_queue(ns, queue),
            error_type=body.error_type,
            max_work_orders=body.max_work_orders,
            reason=body.reason,
            requested_by=ACTOR,
            request_id=uuid.uuid4().hex,
        ),
    )
    return {"redrive": convert.message(reply.redrive)}
