"""Validators shared by every service's validation layer.

Names: `name_pattern(r"[a-z][a-z0-9-]{0,62}")` compiles a pattern anchored at
both ends of the whole string (`\\A...\\Z`, so `.match` and `.fullmatch` agree)
and ASCII-only. An unanchored `^...$` lets a trailing newline through
(`re.match(r"^[a-z]+$", "n\\n")` matches): `namespaces/N\\n/queues/q` would
create an order in namespace "N\\n".

Echoed values: a field violation that repeats the bad value uses `echo`, which
cuts it to `MAX_ECHO_LENGTH` characters and says how long it was, so a
10,000-character name never makes trailers larger than a client accepts.

Enums: `unknown_enum_values` walks a request and names every enum field
holding a number its enum does not define (proto3 keeps unknown numbers:
`order=99` decodes). The gRPC edge (`conveyor_core.grpc.decoding`) refuses
such requests for every RPC of every service.

Strings: `string_problem` refuses NUL and control characters (PostgreSQL text
cannot hold NUL at all) and strings longer than their column. Durations:
`duration_problem` checks the sign of seconds *and* nanos together, and a range.
URLs: `url_problem` parses strictly (no spaces, CR/LF, a valid port and host).
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from functools import cache
from typing import Any
from urllib.parse import urlsplit

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from conveyor_core.errors import FieldViolation

#: The namespace id rule of every service's resource names.
NAMESPACE_RULE = r"[a-z][a-z0-9-]{0,62}"
#: Longest part of a bad value a field violation repeats (`echo`).
MAX_ECHO_LENGTH = 80
#: Control characters no single-line string may hold (NUL included; TAB allowed).
CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def name_pattern(rule: str, flags: int = 0) -> re.Pattern[str]:
    """`rule` matching whole strings only (no trailing newline), ASCII classes."""
    return re.compile(rf"\A(?:{rule})\Z", flags | re.ASCII)


NAMESPACE_ID = name_pattern(NAMESPACE_RULE)


def echo(value: str, limit: int = MAX_ECHO_LENGTH) -> str:
    """`value` quoted for an error message, cut to `limit` characters (saying its length)."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value)} characters)"


# -- enums --------------------------------------------------------------------------


@cache
def _has_enums(descriptor: Descriptor) -> bool:
    return _reaches(descriptor, FieldDescriptor.TYPE_ENUM, frozenset())


def _reaches(descriptor: Descriptor, kind: int, seen: frozenset[str]) -> bool:
    """Whether a message of `descriptor` can hold a field of type `kind` at any depth."""
    if descriptor.full_name in seen:
        return False
    seen = seen | {descriptor.full_name}
    for field in descriptor.fields:
        if field.type == kind:
            return True
        sub = field.message_type
        if (
            field.type == FieldDescriptor.TYPE_MESSAGE
            and sub is not None
            and _reaches(sub, kind, seen)
        ):
            return True
    return False


def unknown_enum_values(message: Any, prefix: str = "") -> list[FieldViolation]:
    """A violation per enum field of `message` (and its sub-messages) whose value its enum
    does not define; field paths as `schedule.overlap_policy`, `items[2].mode`."""
    if not _has_enums(message.DESCRIPTOR):
        return []
    problems: list[FieldViolation] = []
    for field, value in message.ListFields():
        path = f"{prefix}{field.name}"
        if field.type == FieldDescriptor.TYPE_ENUM:
            if field.is_repeated:
                for i, number in enumerate(value):
                    problems += _enum_problem(field, number, f"{path}[{i}]")
            else:
                problems += _enum_problem(field, value, path)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            if field.message_type.GetOptions().map_entry:
                entry = field.message_type.fields_by_name["value"]
                for key, item in value.items():
                    where = f"{path}[{echo(str(key), 40)}]"
                    if entry.type == FieldDescriptor.TYPE_ENUM:
                        problems += _enum_problem(entry, item, where)
                    elif entry.type == FieldDescriptor.TYPE_MESSAGE:
                        problems += unknown_enum_values(item, f"{where}.")
            elif field.is_repeated:
                for i, item in enumerate(value):
                    problems += unknown_enum_values(item, f"{path}[{i}].")
            else:
                problems += unknown_enum_values(value, f"{path}.")
    return problems


def _enum_problem(field: FieldDescriptor, number: int, path: str) -> list[FieldViolation]:
    enum = field.enum_type
    if enum is None or number in enum.values_by_number:
        return []
    known = ", ".join(f"{v.name} ({v.number})" for v in enum.values)
    return [FieldViolation(path, f"unknown {enum.name} value {number}; known: {known}")]


# -- strings ------------------------------------------------------------------------


@cache
def _has_strings(descriptor: Descriptor) -> bool:
    return _reaches(descriptor, FieldDescriptor.TYPE_STRING, frozenset())


def nul_strings(message: Any, prefix: str = "") -> list[FieldViolation]:
    """A violation per string field of `message` (and its sub-messages, map keys and values)
    holding a NUL character: no string of any contract may (PostgreSQL text cannot)."""
    if not _has_strings(message.DESCRIPTOR):
        return []
    problems: list[FieldViolation] = []
    description = "must not contain NUL characters"
    for field, value in message.ListFields():
        path = f"{prefix}{field.name}"
        if field.type == FieldDescriptor.TYPE_STRING:
            values = list(value) if field.is_repeated else [value]
            for i, text in enumerate(values):
                if "\x00" in text:
                    where = f"{path}[{i}]" if field.is_repeated else path
                    problems.append(FieldViolation(where, description))
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            if field.message_type.GetOptions().map_entry:
                entry = field.message_type.fields_by_name["value"]
                for key, item in value.items():
                    if isinstance(key, str) and "\x00" in key:
                        problems.append(FieldViolation(path, f"keys {description}"))
                        continue
                    where = f"{path}[{echo(str(key), 40)}]"
                    if entry.type == FieldDescriptor.TYPE_STRING and "\x00" in item:
                        problems.append(FieldViolation(where, description))
                    elif entry.type == FieldDescriptor.TYPE_MESSAGE:
                        problems += nul_strings(item, f"{where}.")
            elif field.is_repeated:
                for i, item in enumerate(value):
                    problems += nul_strings(item, f"{path}[{i}].")
            else:
                problems += nul_strings(value, f"{path}.")
    return problems


def string_problem(
    value: str, field: str, max_length: int | None = None, *, multiline: bool = False
) -> FieldViolation | None:
    """NUL or control characters (CR/LF too unless `multiline`), or more than `max_length`
    characters; None when `value` is fine."""
    if max_length is not None and len(value) > max_length:
        return FieldViolation(
            field, f"is {len(value)} characters long; at most {max_length} (the column's size)"
        )
    if "\x00" in value:
        return FieldViolation(field, "must not contain NUL characters")
    if not multiline and CONTROL_CHARACTERS.search(value):
        return FieldViolation(field, "must not contain control characters (CR, LF, ...)")
    return None


# -- numbers and durations ----------------------------------------------------------


def finite_problem(
    value: float, field: str, low: float | None = None, high: float | None = None
) -> FieldViolation | None:
    """A float that is NaN or infinite, or outside [low, high]; None when it is fine."""
    if not math.isfinite(value):
        return FieldViolation(field, f"must be a finite number, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        return FieldViolation(field, f"must be in [{lo}, {hi}], got {value:g}")
    return None


def duration_problem(
    duration: Any,
    field: str,
    *,
    minimum: timedelta = timedelta(0),
    maximum: timedelta | None = None,
    limit_name: str = "",
) -> FieldViolation | None:
    """A google.protobuf.Duration below `minimum` (default: negative, seconds or nanos) or
    above `maximum` (`limit_name` names the setting); None when it is fine."""
    seconds, nanos = duration.seconds, duration.nanos
    if seconds * nanos < 0 or not -1_000_000_000 < nanos < 1_000_000_000:
        return FieldViolation(field, "nanos must be in (-10^9, 10^9), of the sign of seconds")
    total_nanos = seconds * 1_000_000_000 + nanos
    if total_nanos < _nanos(minimum):
        if minimum == timedelta(0):
            return FieldViolation(field, f"must not be negative, got {_text(total_nanos)}")
        return FieldViolation(
            field, f"must be at least {_text(_nanos(minimum))}, got {_text(total_nanos)}"
        )
    if maximum is not None and total_nanos > _nanos(maximum):
        named = f" ({limit_name})" if limit_name else ""
        return FieldViolation(
            field, f"must be at most {_text(_nanos(maximum))}{named}, got {_text(total_nanos)}"
        )
    return None


def _nanos(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def _text(nanos: int) -> str:
    seconds, rest = divmod(abs(nanos), 1_000_000_000)
    sign = "-" if nanos < 0 else ""
    return f"{sign}{seconds}.{rest:09d}s".replace(".000000000s", "s")


# -- URLs and headers ---------------------------------------------------------------


def url_problem(url: str, field: str, schemes: tuple[str, ...] = ("http", "https")) -> str | None:
    """Why `url` is not an absolute URL of `schemes` with a host and a valid port."""
    if not url:
        return "required: an absolute http(s) URL"
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        return "must not contain spaces or control characters (CR, LF, ...)"
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError for a port out of range or not a number
        host = parts.hostname
    except ValueError as error:
        return f"is not a valid URL ({error})"
    if parts.scheme not in schemes or not host:
        return f"must be an absolute {'/'.join(schemes)} URL with a host"
    if port == 0:
        return "port must be in 1-65535"
    return None


def header_value_problem(value: str) -> str | None:
    """Why `value` cannot be sent as an HTTP header value (CR, LF, NUL, other controls)."""
    if any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in value):
        return "must not contain CR, LF, NUL or other control characters"
    return None
