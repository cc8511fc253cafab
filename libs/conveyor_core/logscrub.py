"""Secrets never reach a log line: one scrubber applied to every record, exceptions included.

`configure_logging` (conveyor_core.telemetry) installs `LogScrubber` as a log
record factory step, so every record is scrubbed once, when it is made, before
any handler (ours, a log shipper's, pytest's) sees it. It replaces with `***`:

* bearer tokens (`Bearer <token>`, `Authorization: <value>`);
* passwords in URLs (`scheme://user:<password>@host`) and `password=<value>`
  pairs (libpq DSNs, query strings);
* every secret value registered with `register_secret` (the executor registers
  each value it resolves for a run);
* every match of `CONVEYOR_LOG_SCRUB_PATTERNS` (JSON list of regexes; a
  pattern with a group replaces the group only).

The message is formatted and scrubbed (args dropped), an exception is formatted
into `exc_text` and scrubbed, and `exc_info` is dropped: no handler can format
the live exception (and its secret-bearing message) again. Stack info and
`extra=` string fields are scrubbed too.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable
from typing import Any

MASK = "***"
#: Secret values shorter than this are not registered (they would mask ordinary words).
MIN_SECRET_LENGTH = 6

BUILT_IN_PATTERNS = (
    # Bearer tokens and Authorization header values.
    r"(?i)\bbearer\s+([A-Za-z0-9._~+/=-]{4,})",
    r"(?i)\bauthorization[\"']?\s*[:=]\s*[\"']?(?:basic\s+|bearer\s+)?([^\s\"',;]+)",
    # user:password@ in URLs.
    r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]*:([^\s@/]+)@",
    # password=... (libpq DSNs, query strings, key=value logs).
    r"(?i)\b(?:password|passwd|pwd)=([^\s&;,\"']+)",
)

_secrets: set[str] = set()
_secrets_lock = threading.Lock()
_standard_fields = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
}


def register_secret(value: str) -> None:
    """Mask `value` in every later log record (values under MIN_SECRET_LENGTH are ignored)."""
    if len(value) >= MIN_SECRET_LENGTH:
        with _secrets_lock:
            _secrets.add(value)


class LogScrubber:
    """Scrubs text and log records with the built-in and configured patterns."""

    def __init__(self, patterns: Iterable[str] = ()) -> None:
        self.patterns = [re.compile(p) for p in (*BUILT_IN_PATTERNS, *patterns)]

    def scrub(self, text: str) -> str:
        with _secrets_lock:
            secrets = sorted(_secrets, key=len, reverse=True)
        for secret in secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        for pattern in self.patterns:
            text = pattern.sub(_masked, text)
        return text

    def scrub_record(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep what is there, scrubbed
            message = f"{record.msg} {record.args}"
        record.msg, record.args = self.scrub(message), None
        if record.exc_info:
            if not record.exc_text:
                record.exc_text = _FORMATTER.formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = self.scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = self.scrub(record.stack_info)
        for key, value in list(record.__dict__.items()):
            if key not in _standard_fields and isinstance(value, str):
                setattr(record, key, self.scrub(value))


def _masked(match: re.Match[str]) -> str:
    if match.groups() and match.group(1) is not None:
        start, end = match.span(1)
        whole = match.group(0)
        offset = match.start(0)
        return whole[: start - offset] + MASK + whole[end - offset :]
    return MASK


_FORMATTER = logging.Formatter()
_installed: LogScrubber | None = None
_base_factory: Callable[..., logging.LogRecord] | None = None


def install(patterns: Iterable[str] = ()) -> LogScrubber:
    """Scrub every record made from now on (idempotent: a second call replaces the patterns)."""
    global _installed, _base_factory
    scrubber = LogScrubber(patterns)
    if _installed is None:
        _base_factory = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            assert _base_factory is not None
            record = _base_factory(*args, **kwargs)
            if _installed is not None:
                _installed.scrub_record(record)
            return record

        logging.setLogRecordFactory(factory)
    _installed = scrubber
    return scrubber


def uninstall() -> None:
    """Back to the record factory before `install` (tests)."""
    global _installed, _base_factory
    if _base_factory is not None:
        logging.setLogRecordFactory(_base_factory)
    _installed, _base_factory = None, None
