"""`conveyor topics list|get` and `conveyor events list|get|skip|stale`: the event store.

An event is named TOPIC/SEQUENCE (or namespaces/N/topics/TOPIC/events/SEQUENCE).
Payloads print decoded (JSON as JSON, text as text), never as protobuf bytes.
"""

from __future__ import annotations

import getpass
import json
import socket
from typing import Any

import click

from conveyor.events.v1 import messages_pb2 as events_pb
from conveyor.events.v1 import service_pb2 as events_rpc
from conveyor_cli import documents, names, render
from conveyor_cli.commands.common import collect, limit_option
from conveyor_cli.session import Session, execute

STATUSES = {
    "pending": events_pb.EVENT_STATUS_PENDING,
    "reserved": events_pb.EVENT_STATUS_RESERVED,
    "consumed": events_pb.EVENT_STATUS_CONSUMED,
    "skipped": events_pb.EVENT_STATUS_SKIPPED,
}


def who() -> str:
    """user@host: who asked, when the caller has no token naming them."""
    try:
        user = getpass.getuser()
    except Exception:  # no user name in a bare container
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


@click.group()
def topics() -> None:
    """Topics: list, get (with their counts and stale events)."""


@topics.command("list")
@click.option("--workflow", help="only the topics of this workflow")
@limit_option(0)
def list_topics(workflow: str | None, limit: int) -> None:
    """The topics of the namespace."""

    async def body(session: Session) -> None:
        request = events_rpc.ListTopicsRequest(parent=session.parent, workflow=workflow or "")
        items = await collect(session, session.events.ListTopics, request, "topics", limit)
        out = render.table("TOPIC", "WORKFLOW", "CREATED", "DESCRIPTION")
        for topic in items:
            render.row(
                out,
                topic.topic_id,
                topic.workflow,
                render.when(topic, "create_time"),
                topic.description,
            )
        render.emit_list(session.options, items, out, f"no topics in {session.parent}")

    execute(body)


@topics.command("get")
@click.argument("topic")
def get_topic(topic: str) -> None:
    """One topic and its counts; stale events are pending past the store's threshold."""

    async def body(session: Session) -> None:
        name = names.topic(topic, session.namespace)
        found = (
            await session.call(session.events.GetTopic, events_rpc.GetTopicRequest(name=name))
        ).topic
        stats = (
            await session.call(
                session.events.GetTopicStats, events_rpc.GetTopicStatsRequest(name=name)
            )
        ).stats
        rows: list[tuple[str, Any]] = [
            ("name", found.name),
            ("workflow", found.workflow or "-"),
            ("description", found.description),
            ("created", render.when(found, "create_time")),
            ("pending", stats.pending),
            ("reserved", stats.reserved),
            ("consumed", stats.consumed),
            ("skipped", stats.skipped),
            ("oldest pending", render.when(stats, "oldest_pending_publish_time")),
        ]
        if stats.stale:
            rows.append(("stale", render.Text(f"{stats.stale} (pending too long)", style="red")))
        data = {**render.message_json(found), "stats": render.message_json(stats)}
        render.emit(session.options, data, render.details(rows))

    execute(body)


@click.group()
def events() -> None:
    """Events: list, get, skip (with a reason), stale."""


def payload_preview(payload: Any, width: int = 60) -> str:
    decoded = render.decode_payload(payload.content_type, payload.data)
    if decoded is None:
        return f"<{len(payload.data)} bytes {payload.content_type}>" if payload.data else ""
    value = next(iter(decoded.values()))
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= width else text[: width - 1] + "…"


def _events_table(items: list[events_pb.Event], stale: bool = False) -> render.Table:
    columns = ["EVENT", "STATUS", "TITLE", "PUBLISHED", "BY", "PAYLOAD"]
    out = render.table(*(["TOPIC", *columns] if stale else columns))
    for event in items:
        by = event.consumed_by or event.reserved_by or event.skipped_by
        cells = [
            event.sequence,
            render.state(render.short_enum(event, "status")),
            event.title,
            render.when(event, "publish_time"),
            by,
            payload_preview(event.payload),
        ]
        render.row(out, *([render.last_segment(event.topic), *cells] if stale else cells))
    return out


@events.command("list")
@click.argument("topic")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(list(STATUSES)),
    help="only events in this status (repeat for several)",
)
@click.option("--newest-first", is_flag=True, help="newest first (default oldest first)")
@limit_option()
def list_events(topic: str, statuses: tuple[str, ...], newest_first: bool, limit: int) -> None:
    """Events of TOPIC."""

    async def body(session: Session) -> None:
        request = events_rpc.ListEventsRequest(
            parent=names.topic(topic, session.namespace),
            statuses=[STATUSES[s] for s in statuses],
            order=events_rpc.EVENT_ORDER_NEWEST_FIRST
            if newest_first
            else events_rpc.EVENT_ORDER_OLDEST_FIRST,
        )
        items = await collect(session, session.events.ListEvents, request, "events", limit)
        render.emit_list(session.options, items, _events_table(items), "no events match")

    execute(body)


def _event_rows(event: events_pb.Event) -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = [
        ("name", event.name),
        ("status", render.state(render.short_enum(event, "status"))),
        ("title", event.title),
        ("message id", event.message_id),
        ("published", render.when(event, "publish_time")),
        ("correlation id", event.correlation_id),
    ]
    if event.reserved_by:
        rows += [
            ("reserved by", event.reserved_by),
            ("reserved", render.when(event, "reserve_time")),
        ]
    if event.consumed_by:
        rows += [
            ("consumed by", event.consumed_by),
            ("consumed", render.when(event, "consume_time")),
        ]
    if event.skipped_by or event.skip_reason:
        rows += [
            ("skipped by", event.skipped_by),
            ("skip reason", event.skip_reason),
            ("skipped", render.when(event, "skip_time")),
        ]
    payload = render.payload_json(event.payload)
    rows.append(("content type", event.payload.content_type or "-"))
    body = {k: v for k, v in payload.items() if k != "content_type"}
    value = next(iter(body.values()), "")
    rows.append(("payload", value if isinstance(value, str) else json.dumps(value, indent=2)))
    return rows


@events.command("get")
@click.argument("event")
def get_event(event: str) -> None:
    """One event (TOPIC/SEQUENCE) with its decoded payload and consumption record."""

    async def body(session: Session) -> None:
        name = names.event(event, session.namespace)
        found = (
            await session.call(session.events.GetEvent, events_rpc.GetEventRequest(name=name))
        ).event
        render.emit(session.options, render.message_json(found), render.details(_event_rows(found)))

    execute(body)


@events.command("skip")
@click.argument("event")
@click.option("--reason", required=True, help="why (recorded with the event)")
@click.option("--skipped-by", default=who, show_default="user@host", help="who skips it")
def skip(event: str, reason: str, skipped_by: str) -> None:
    """Skip a pending or reserved EVENT: no consumer will take it."""
    if not reason.strip():
        raise click.BadParameter("say why the event is skipped", param_hint="--reason")

    async def body(session: Session) -> None:
        name = names.event(event, session.namespace)
        reply = await session.call(
            session.events.SkipEvent,
            events_rpc.SkipEventRequest(name=name, skipped_by=skipped_by, reason=reason),
        )
        render.done(session.options, reply.event, f"event {name} skipped: {reason}")

    execute(body)


@events.command("stale")
@click.option("--older-than", help="pending longer than this (e.g. 7d, 12h; default: the store's)")
@limit_option()
def stale(older_than: str | None, limit: int) -> None:
    """Pending events of the namespace older than a threshold, across its topics."""
    seconds = documents.parse_duration(older_than, "--older-than") if older_than else None

    async def body(session: Session) -> None:
        request = events_rpc.ListStaleEventsRequest(parent=session.parent)
        if seconds is not None:
            request.older_than.CopyFrom(documents.duration(seconds))
        items = await collect(session, session.events.ListStaleEvents, request, "events", limit)
        render.emit_list(
            session.options, items, _events_table(items, stale=True), "no stale events"
        )

    execute(body)
