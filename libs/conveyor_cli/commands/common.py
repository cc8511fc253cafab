"""What the command modules share: paging through list calls, --limit, confirmations."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from conveyor_cli.session import Session

DEFAULT_LIMIT = 50


def limit_option(default: int = DEFAULT_LIMIT) -> Callable[[Any], Any]:
    return click.option(
        "--limit",
        type=click.IntRange(min=0),
        default=default,
        show_default=True,
        help="at most this many (0: all, page after page)",
    )


async def collect(session: Session, method: Any, request: Any, field: str, limit: int) -> list[Any]:
    """Items of a paged list call (`field` of each response), up to `limit` (0: all)."""
    items: list[Any] = []
    page_size = min(limit, 1000) if limit else 1000
    while True:
        request.page_size = page_size if not limit else min(page_size, limit - len(items))
        response = await session.call(method, request)
        items.extend(getattr(response, field))
        if not response.next_page_token or (limit and len(items) >= limit):
            return items[:limit] if limit else items
        request.page_token = response.next_page_token


def confirm(question: str, yes: bool) -> None:
    """Ask on a terminal; elsewhere --yes must be given (a script cannot answer)."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise click.UsageError(f"{question} Pass --yes to confirm (standard input is no terminal)")
    if not click.confirm(question, default=False, err=True):
        raise click.exceptions.Exit(1)
