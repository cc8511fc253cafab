"""`conveyor dead-letters list|redrive|history`: orders that ran out of attempts (DEAD)."""

from __future__ import annotations

import uuid

import click

from conveyor.queue.v1 import messages_pb2 as queue_pb
from conveyor.queue.v1 import service_pb2 as queue_rpc
from conveyor_cli import documents, names, render
from conveyor_cli.commands.common import collect, limit_option
from conveyor_cli.commands.events import who
from conveyor_cli.session import Session, execute


@click.group("dead-letters")
def dead_letters() -> None:
    """Dead letters: list, redrive (with a reason), history of redrives."""


@dead_letters.command("list")
@click.option("--queue", help="only this queue (default: every queue of the namespace)")
@click.option("--error-type", help="only orders whose last failure has this type")
@limit_option()
def list_dead(queue: str | None, error_type: str | None, limit: int) -> None:
    """Dead work orders, newest first, with their last failure."""

    async def body(session: Session) -> None:
        request = queue_rpc.ListWorkOrdersRequest(
            parent=names.queue(queue or "-", session.namespace),
            states=[queue_pb.WORK_ORDER_STATE_DEAD],
            error_type=error_type or "",
            order=queue_rpc.LIST_ORDER_NEWEST_FIRST,
        )
        items = await collect(session, session.queue.ListWorkOrders, request, "work_orders", limit)
        out = render.table("WORK ORDER", "QUEUE", "ATTEMPTS", "DIED", "ERROR TYPE", "MESSAGE")
        for order in items:
            failure = order.last_failure
            render.row(
                out,
                order.id,
                order.queue,
                f"{order.attempt}/{order.max_attempts}",
                render.when(order, "complete_time"),
                failure.type,
                failure.message,
            )
        render.emit_list(session.options, items, out, "no dead letters")

    execute(body)


@dead_letters.command("redrive")
@click.argument("queue")
@click.option("--reason", required=True, help="why (required; recorded with the redrive)")
@click.option("--error-type", help="only orders whose last failure has this type")
@click.option("--dead-after", help="only orders that died at or after this time (or now-1h)")
@click.option("--max", "max_orders", type=click.IntRange(min=0), default=0, help="at most (0: all)")
@click.option("--requested-by", default=who, show_default="user@host", help="who asks")
@click.option("--request-id", help="idempotency: the same id redrives only once")
def redrive(
    queue: str,
    reason: str,
    error_type: str | None,
    dead_after: str | None,
    max_orders: int,
    requested_by: str,
    request_id: str | None,
) -> None:
    """Move the dead orders of QUEUE back to QUEUED."""
    if not reason.strip():
        raise click.BadParameter("say why the orders are redriven", param_hint="--reason")
    after = documents.parse_time(dead_after, "--dead-after") if dead_after else None

    async def body(session: Session) -> None:
        request = queue_rpc.RedriveWorkOrdersRequest(
            parent=names.queue(queue, session.namespace),
            error_type=error_type or "",
            max_work_orders=max_orders,
            reason=reason,
            requested_by=requested_by,
            request_id=request_id or str(uuid.uuid4()),
        )
        if after is not None:
            request.dead_after.CopyFrom(documents.timestamp(after))
        reply = await session.call(session.queue.RedriveWorkOrders, request)
        done = reply.redrive
        text = f"{done.redriven_count} order(s) of {request.parent} redriven ({done.name})"
        render.done(session.options, done, text)

    execute(body)


@dead_letters.command("history")
@click.argument("queue")
@limit_option()
def history(queue: str, limit: int) -> None:
    """Past redrives of QUEUE, newest first: who, why, how many."""

    async def body(session: Session) -> None:
        request = queue_rpc.ListRedrivesRequest(parent=names.queue(queue, session.namespace))
        items = await collect(session, session.queue.ListRedrives, request, "redrives", limit)
        out = render.table("REDRIVE", "WHEN", "BY", "COUNT", "ERROR TYPE", "REASON")
        for item in items:
            render.row(
                out,
                render.last_segment(item.name),
                render.when(item, "create_time"),
                item.requested_by,
                item.redriven_count,
                item.error_type,
                item.reason,
            )
        render.emit_list(session.options, items, out, "no redrives")

    execute(body)
