"""`conveyor journal tail [-f]`: the lifecycle records of every service, filtered.

It prints the last --lines records that match (ReadJournal newest first, so only those
are read), oldest of them first; with -f it then follows new records as they commit
(SubscribeJournal from the head it read), one line each, or one JSON line each under
--output json.
"""

from __future__ import annotations

import click
from rich.text import Text

from conveyor.events.v1 import messages_pb2 as events_pb
from conveyor.events.v1 import service_pb2 as events_rpc
from conveyor_cli import render
from conveyor_cli.session import Session, execute

PAGE = 1000


@click.group()
def journal() -> None:
    """The journal: tail [-f], filtered by correlation id, namespace, subject or type."""


def record_line(record: events_pb.JournalRecord) -> Text:
    line = Text(f"{record.position:>8} ", style="dim")
    line.append(render.when(record, "time")).append("  ")
    line.append(record.type, style="bold").append(f"  {record.namespace}")
    if record.subjects:
        line.append(f"  {render.mapping(dict(record.subjects))}")
    if record.attributes:
        line.append(f"  {render.mapping(dict(record.attributes))}", style="dim")
    if record.correlation_id:
        line.append(f"  cid={record.correlation_id}", style="cyan")
    return line


async def _latest(
    session: Session, selection: events_rpc.JournalFilter, lines: int, after: int
) -> tuple[list[events_pb.JournalRecord], int]:
    """The last `lines` matching records after `after` (0 lines: all of them), oldest
    first, and the head to follow from. The last N are read newest first, page by page
    back from the head, so a long journal costs no more than N records."""
    found: list[events_pb.JournalRecord] = []
    if not lines:
        position = after
        while True:
            page = await session.call(
                session.journal.ReadJournal,
                events_rpc.ReadJournalRequest(
                    after_position=position, filter=selection, page_size=PAGE
                ),
            )
            found.extend(page.records)
            position = max(position, page.next_position)
            if len(page.records) < PAGE:
                return found, position
    head, before = 0, 0
    while len(found) < lines:
        page = await session.call(
            session.journal.ReadJournal,
            events_rpc.ReadJournalRequest(
                after_position=after,
                filter=selection,
                page_size=min(PAGE, lines - len(found)),
                newest_first=True,
                before_position=before,
            ),
        )
        head = head or max(page.head_position, after)
        found.extend(page.records)
        before = page.next_position
        if not before or not page.records:
            break
    return found[::-1], head


def _show(session: Session, record: events_pb.JournalRecord) -> None:
    if session.options.json:
        render.print_json(render.message_json(record), lines=True)
    else:
        render.console().print(record_line(record), soft_wrap=True)


@journal.command("tail")
@click.option("-f", "--follow", is_flag=True, help="keep printing new records (Ctrl-C stops)")
@click.option("--correlation-id", help="only records of this correlation id")
@click.option("--subject", help="only records naming this subject id (a work order id, ...)")
@click.option("--type", "type_prefix", help="only types starting so, e.g. queue.work_order.")
@click.option("--all-namespaces", is_flag=True, help="every namespace (default: --namespace only)")
@click.option(
    "--lines",
    type=click.IntRange(min=0),
    default=20,
    show_default=True,
    help="the last this many records that match (0: all)",
)
@click.option(
    "--after", type=click.IntRange(min=0), default=0, help="only records after this position"
)
def tail(
    follow: bool,
    correlation_id: str | None,
    subject: str | None,
    type_prefix: str | None,
    all_namespaces: bool,
    lines: int,
    after: int,
) -> None:
    """The latest journal records that match; with -f, then every new one.

    Output: position, time, type, namespace, subjects, attributes, correlation id;
    under --output json, one JSON line per record (JSON lines, also without -f)."""

    async def body(session: Session) -> None:
        selection = events_rpc.JournalFilter(
            namespace="" if all_namespaces else session.namespace,
            type_prefix=type_prefix or "",
            subject=subject or "",
            correlation_id=correlation_id or "",
        )
        last, position = await _latest(session, selection, lines, after)
        for record in last:
            _show(session, record)
        if not follow:
            return
        request = events_rpc.SubscribeJournalRequest(after_position=position, filter=selection)
        async for response in session.stream(session.journal.SubscribeJournal, request):
            _show(session, response.record)

    execute(body)
