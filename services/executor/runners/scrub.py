"""Keeping secrets out of records, and keeping records small (pure).

A `Scrubber` is built per run from the settings and the secret values the run
resolved. Whatever goes into a step (URL, headers, bodies) passes through it:
secret values and matches of the configured patterns become "***", headers
filled from a SecretRef show "[secret:<name>]", and credential-style headers
(Authorization, Cookie, ...) show "***" whatever their source.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

MASK = "***"


def truncation_marker(dropped: int) -> str:
    return f"\n[... truncated {dropped} bytes ...]\n"


def tail(data: bytes, limit: int) -> bytes:
    """The last `limit` bytes of `data` (none for 0: `data[-0:]` would be all of it)."""
    return data[-limit:] if limit > 0 else b""


def truncate(data: bytes, limit: int) -> tuple[bytes, bool]:
    """`data` cut to `limit` bytes plus a marker saying how many were dropped."""
    if len(data) <= limit:
        return data, False
    return data[:limit] + truncation_marker(len(data) - limit).encode(), True


class Scrubber:
    """Masks secrets and configured patterns in text that is about to be recorded.

    Args:
        patterns: Regular expressions (settings.scrub_patterns) to mask.
        header_names: Header names (case-insensitive) whose values are never shown.
        secret_values: Values of secrets resolved for this run.
    """

    def __init__(
        self,
        patterns: Iterable[str],
        header_names: Iterable[str],
        secret_values: Iterable[str] = (),
    ) -> None:
        self._patterns = [re.compile(p) for p in patterns]
        self._header_names = frozenset(name.lower() for name in header_names)
        # Longest first, so a secret containing another is masked whole.
        self._secrets = sorted({s for s in secret_values if s}, key=len, reverse=True)

    def with_secrets(self, secret_values: Iterable[str]) -> Scrubber:
        scrubber = Scrubber((), ())
        scrubber._patterns = self._patterns
        scrubber._header_names = self._header_names
        scrubber._secrets = sorted(
            {*self._secrets, *(s for s in secret_values if s)}, key=len, reverse=True
        )
        return scrubber

    def text(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        for pattern in self._patterns:
            text = pattern.sub(MASK, text)
        return text

    def bytes_(self, data: bytes) -> bytes:
        """`data` (e.g. process output) with secret values and patterns masked.

        Patterns are matched on the UTF-8 decoding; invalid bytes pass through
        (decoded with surrogateescape, so binary output survives untouched).
        """
        if not self._secrets and not self._patterns:
            return data
        text = data.decode("utf-8", errors="surrogateescape")
        return self.text(text).encode("utf-8", errors="surrogateescape")

    def headers(
        self, headers: Mapping[str, str], secret_refs: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        """Headers fit for a record; `secret_refs` maps header name -> secret name."""
        refs = {name.lower(): secret for name, secret in (secret_refs or {}).items()}
        shown: dict[str, str] = {}
        for name, value in headers.items():
            lower = name.lower()
            if lower in refs:
                shown[name] = f"[secret:{refs[lower]}]"
            elif lower in self._header_names:
                shown[name] = MASK
            else:
                shown[name] = self.text(value)
        return shown

    def body(self, data: bytes, limit: int) -> tuple[str, bool]:
        """A body fit for a record: decoded leniently, scrubbed, then cut to `limit`.

        Scrubbing happens before the cut (on a little more than `limit` bytes),
        so a secret straddling the cut is still masked rather than half shown.
        """
        head = data[: limit + _SCRUB_OVERLAP].decode("utf-8", errors="replace")
        scrubbed = self.text(head)
        if len(data) <= limit:
            return scrubbed, False
        return scrubbed[:limit] + truncation_marker(len(data) - limit), True


#: Bytes beyond the record limit that are scrubbed before cutting (longest secret we mask whole).
_SCRUB_OVERLAP = 1024
