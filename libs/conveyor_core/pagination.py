"""Opaque, tamper-evident page tokens (AIP-158).

A token is base64url(JSON cursor + HMAC-SHA256). The HMAC covers the cursor
and a `scope` naming the request's filters, so a token that was edited, or is
replayed with different filters, is refused with INVALID_ARGUMENT on
`page_token` instead of silently returning the wrong page.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from conveyor_core.errors import FieldViolation, InvalidArgument

_MAC_BYTES = 16
T = TypeVar("T")


class PageTokens:
    def __init__(self, secret: str) -> None:
        self._key = secret.encode()

    def encode(self, scope: str, cursor: dict[str, Any]) -> str:
        body = json.dumps(cursor, separators=(",", ":"), sort_keys=True).encode()
        mac = self._mac(scope, body)
        return base64.urlsafe_b64encode(mac + body).decode().rstrip("=")

    def decode(self, scope: str, token: str, field: str = "page_token") -> dict[str, Any] | None:
        """The cursor of `token` (None for an empty token, the first page)."""
        if not token:
            return None
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (ValueError, TypeError):
            raise _invalid(field, "is not a page token from this API") from None
        mac, body = raw[:_MAC_BYTES], raw[_MAC_BYTES:]
        if len(mac) != _MAC_BYTES or not hmac.compare_digest(mac, self._mac(scope, body)):
            raise _invalid(
                field, "was altered, or the request's filters changed since it was issued"
            )
        cursor = json.loads(body)
        if not isinstance(cursor, dict):
            raise _invalid(field, "is not a page token from this API")
        return cursor

    def next_page(
        self,
        found: Sequence[T],
        size: int,
        scope: str,
        cursor: Callable[[T], dict[str, Any]],
    ) -> tuple[Sequence[T], str]:
        """Split `size + 1` fetched items into this page and the next page's token.

        Lists fetch one item more than the page size: if it came, there is a
        next page, whose token carries `cursor(last item of this page)`.
        """
        page = found[:size]
        more = len(found) > size
        return page, self.encode(scope, cursor(page[-1])) if more else ""

    def _mac(self, scope: str, body: bytes) -> bytes:
        return hmac.new(self._key, scope.encode() + b"\x00" + body, hashlib.sha256).digest()[
            :_MAC_BYTES
        ]


def _invalid(field: str, description: str) -> InvalidArgument:
    return InvalidArgument(FieldViolation(field, description))


def page_size(requested: int, default: int, maximum: int, field: str = "page_size") -> int:
    """AIP-158 page size: 0 means the default; above the maximum is capped; negative is invalid."""
    if requested < 0:
        raise _invalid(field, "must not be negative")
    if requested == 0:
        return default
    return min(requested, maximum)
