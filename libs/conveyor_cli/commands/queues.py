"""`conveyor queues list|stats|pause|resume`: the work-order queues of a namespace."""

from __future__ import annotations

import asyncio

import click

from conveyor.queue.v1 import messages_pb2 as queue_pb
from conveyor.queue.v1 import service_pb2 as queue_rpc
from conveyor_cli import names, render
from conveyor_cli.commands.common import collect, limit_option
from conveyor_cli.session import Session, execute


@click.group()
def queues() -> None:
    """Queues: list, stats (depth, rates, wait times), pause, resume."""


def _rate_limit(limit: queue_pb.RateLimit) -> str:
    if not limit.tokens:
        return "-"
    return f"{limit.tokens}/{render.seconds(limit, 'period')}"


@queues.command("list")
@limit_option(0)
def list_queues(limit: int) -> None:
    """The queues of the namespace with their flow-control settings.

    A queue comes into being with its first order; one that never had settings
    changed lists with the defaults."""

    async def body(session: Session) -> None:
        request = queue_rpc.ListQueuesRequest(parent=session.parent)
        items = await collect(session, session.queue.ListQueues, request, "queues", limit)
        out = render.table("QUEUE", "STATE", "MAX IN FLIGHT", "PER KEY", "FAIR", "RATE LIMIT")
        for queue in items:
            render.row(
                out,
                queue.queue_id,
                render.state("paused" if queue.paused else "active"),
                queue.max_in_flight or "unlimited",
                queue.max_in_flight_per_key or "unlimited",
                "yes" if queue.fair else "no",
                _rate_limit(queue.rate_limit),
            )
        render.emit_list(session.options, items, out, f"no queues in {session.parent}")

    execute(body)


def _depth(stats: queue_pb.QueueStats, state: int) -> int:
    return next((c.count for c in stats.depth if c.state == state), 0)


@queues.command("stats")
@click.argument("queue", required=False)
def stats(queue: str | None) -> None:
    """Depth by state, in flight, oldest queued age, rates and wait-time percentiles:
    of QUEUE, or of every queue of the namespace."""

    async def body(session: Session) -> None:
        if queue:
            queue_names = [names.queue(queue, session.namespace)]
        else:
            request = queue_rpc.ListQueuesRequest(parent=session.parent)
            listed = await collect(session, session.queue.ListQueues, request, "queues", 0)
            queue_names = [q.name for q in listed]
        replies = await asyncio.gather(
            *(
                session.call(session.queue.GetQueueStats, queue_rpc.GetQueueStatsRequest(name=n))
                for n in queue_names
            )
        )
        items = [reply.stats for reply in replies]
        out = render.table(
            "QUEUE",
            "QUEUED",
            "LEASED",
            "DEAD",
            "IN FLIGHT",
            "OLDEST",
            "ADD/S",
            "DISPATCH/S",
            "WAIT P50",
            "P90",
            "P99",
        )
        for item in items:
            render.row(
                out,
                render.last_segment(item.queue),
                _depth(item, queue_pb.WORK_ORDER_STATE_QUEUED),
                _depth(item, queue_pb.WORK_ORDER_STATE_LEASED),
                _depth(item, queue_pb.WORK_ORDER_STATE_DEAD),
                item.in_flight,
                render.seconds(item, "oldest_queued_age"),
                f"{item.add_rate_per_second:.2f}",
                f"{item.dispatch_rate_per_second:.2f}",
                render.seconds(item, "wait_time_p50"),
                render.seconds(item, "wait_time_p90"),
                render.seconds(item, "wait_time_p99"),
            )
        if queue and session.options.json:
            render.print_json(render.message_json(items[0]))
        else:
            render.emit_list(session.options, items, out, f"no queues in {session.parent}")

    execute(body)


def _pause_or_resume(queue: str, pause: bool) -> None:
    async def body(session: Session) -> None:
        name = names.queue(queue, session.namespace)
        if pause:
            reply = await session.call(
                session.queue.PauseQueue, queue_rpc.PauseQueueRequest(name=name)
            )
        else:
            reply = await session.call(
                session.queue.ResumeQueue, queue_rpc.ResumeQueueRequest(name=name)
            )
        verb = "paused: submits are accepted, nothing is leased" if pause else "resumed"
        render.done(session.options, reply.queue, f"queue {reply.queue.name} {verb}")

    execute(body)


@queues.command("pause")
@click.argument("queue")
def pause(queue: str) -> None:
    """Stop leasing from QUEUE (submits are still accepted)."""
    _pause_or_resume(queue, pause=True)


@queues.command("resume")
@click.argument("queue")
def resume(queue: str) -> None:
    """Resume leasing from a paused QUEUE."""
    _pause_or_resume(queue, pause=False)
