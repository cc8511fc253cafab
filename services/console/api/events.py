"""JSON API: topics with their stats, events (stale ones flagged), event detail, skip; the
journal trail of a correlation id (a work order's whole life)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from conveyor.events.v1 import messages_pb2 as em
from conveyor.events.v1 import service_pb2 as e
from conveyor_console import convert
from conveyor_console.web import ACTOR, CallerDep, ReasonBody, bad_request
from conveyor_sdk._errors import ConveyorError

router = APIRouter(tags=["events"])


def _topic(ns: str, topic: str) -> str:
    return f"namespaces/{ns}/topics/{topic}"


async def _stale_names(call: CallerDep, ns: str) -> set[str]:
    """The namespace's stale events (pending longer than the event store's threshold)."""
    reply = await call(
        "events",
        "ListStaleEvents",
        e.ListStaleEventsRequest(parent=f"namespaces/{ns}", page_size=1000),
    )
    return {item.name for item in reply.events}


def _event(message: Any, stale: set[str]) -> dict[str, Any]:
    row = convert.message(message)
    assert row is not None
    row["id"] = convert.leaf(message.name)
    row["stale"] = message.name in stale
    return row


@router.get(
    "/namespaces/{ns}/topics", summary="Topics with pending, consumed, skipped and stale counts"
)
async def list_topics(ns: str, call: CallerDep) -> dict[str, Any]:
    reply = await call(
        "events", "ListTopics", e.ListTopicsRequest(parent=f"namespaces/{ns}", page_size=1000)
    )
    stats = await call.gateway.gather(
        *(
            call("events", "GetTopicStats", e.GetTopicStatsRequest(name=t.name))
            for t in reply.topics
        )
    )
    topics = []
    for topic, stat in zip(reply.topics, stats, strict=True):
        row = convert.message(topic)
        assert row is not None
        row["id"] = convert.leaf(topic.name)
        row["stats"] = None if isinstance(stat, ConveyorError) else convert.message(stat.stats)
        topics.append(row)
    return {"topics": topics}


@router.get("/namespaces/{ns}/topics/{topic}/events", summary="Events of a topic, newest first")
async def list_events(
    ns: str,
    topic: str,
    call: CallerDep,
    status: Annotated[
        list[str] | None, Query(description="PENDING, RESERVED, CONSUMED, SKIPPED")
    ] = None,
    page_token: str = "",
    page_size: int = Query(50, ge=1, le=1000),
) -> dict[str, Any]:
    statuses: list[Any] = []  # enum numbers
    for value in status or []:
        number = convert.enum_number(em.EventStatus.DESCRIPTOR, value)
        if number is None:
            raise bad_request("status", f"unknown event status {value!r}")
        statuses.append(number)
    name = _topic(ns, topic)
    reply = await call(
        "events",
        "ListEvents",
        e.ListEventsRequest(
            parent=name,
            statuses=statuses,
            order=e.EVENT_ORDER_NEWEST_FIRST,
            page_size=page_size,
            page_token=page_token,
        ),
    )
    stats = await call("events", "GetTopicStats", e.GetTopicStatsRequest(name=name))
    stale = await _stale_names(call, ns)
    return {
        "topic": topic,
        "stats": convert.message(stats.stats),
        "events": [_event(item, stale) for item in reply.events],
        "next_page_token": reply.next_page_token,
    }


@router.get("/namespaces/{ns}/topics/{topic}/events/{sequence}", summary="One event, stale or not")
async def get_event(ns: str, topic: str, sequence: str, call: CallerDep) -> dict[str, Any]:
    name = f"{_topic(ns, topic)}/events/{sequence}"
    reply = await call("events", "GetEvent", e.GetEventRequest(name=name))
    return {"event": _event(reply.event, await _stale_names(call, ns))}


@router.post(
    "/namespaces/{ns}/topics/{topic}/events/{sequence}/skip",
    summary="Skip a pending event: no consumer will get it (reason required)",
)
async def skip_event(
    ns: str, topic: str, sequence: str, body: ReasonBody, call: CallerDep
) -> dict[str, Any]:
    name = f"{_topic(ns, topic)}/events/{sequence}"
    reply = await call(
        "events", "SkipEvent", e.SkipEventRequest(name=name, skipped_by=ACTOR, reason=body.reason)
    )
    return {"event": _event(reply.event, set())}


@router.get(
    "/namespaces/{ns}/journal", summary="Journal records: a work order's trail by correlation id"
)
async def read_journal(
    ns: str,
    call: CallerDep,
    correlation_id: str = "",
    subject: str = Query("", description="A resource name the records are about."),
    type_prefix: str = "",
    after_position: int = Query(0, ge=0),
    page_size: int = Query(200, ge=1, le=1000),
) -> dict[str, Any]:
    reply = await call(
        "journal",
        "ReadJournal",
        e.ReadJournalRequest(
            after_position=after_position,
            filter=e.JournalFilter(
                namespace=ns,
                correlation_id=correlation_id,
                subject=subject,
                type_prefix=type_prefix,
            ),
            page_size=page_size,
        ),
    )
    return {"records": convert.messages(reply.records), "next_position": reply.next_position}
