"""The correlation id of the work in progress, carried in a `ContextVar`.

Every gRPC call carries a correlation id in the `x-correlation-id` metadata
key. The server interceptor sets `correlation_id_var` for the duration of a
call, so handler code, log records and outgoing client calls made by the
handler all see the same id without passing it around. Edges that start work
on their own (a schedule firing, a CLI command) open a `correlation_scope()`
per unit of work, so that two unrelated pieces of work never share an id.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

CORRELATION_METADATA_KEY = "x-correlation-id"

correlation_id_var: ContextVar[str | None] = ContextVar("conveyor_correlation_id", default=None)

# Inbound ids end up in logs and span attributes: accept only short, plain
# tokens so a caller cannot inject newlines or megabytes into them.
_VALID_CORRELATION_ID = re.compile(r"[A-Za-z0-9._:/-]{1,128}")


def get_correlation_id() -> str | None:
    """The correlation id of the current context, if one was set."""
    return correlation_id_var.get()


def new_correlation_id() -> str:
    """A fresh correlation id (uuid4 as 32 hex characters); does not set it."""
    return uuid.uuid4().hex


def ensure_correlation_id() -> str:
    """The current correlation id, after setting a new one if there was none."""
    correlation_id = correlation_id_var.get()
    if correlation_id is None:
        correlation_id = new_correlation_id()
        correlation_id_var.set(correlation_id)
    return correlation_id


def is_valid_correlation_id(value: str) -> bool:
    """Whether an id received from a peer is safe to adopt (1-128 plain characters)."""
    return _VALID_CORRELATION_ID.fullmatch(value) is not None


@contextmanager
def correlation_scope(correlation_id: str | None = None) -> Iterator[str]:
    """Run a block under a correlation id (a new one by default), then restore the previous.

    Example:
        >>> with correlation_scope("fire-42") as correlation_id:
        ...     get_correlation_id() == correlation_id
        True
    """
    correlation_id = correlation_id or new_correlation_id()
    token = correlation_id_var.set(correlation_id)
    try:
        yield correlation_id
    finally:
        correlation_id_var.reset(token)
