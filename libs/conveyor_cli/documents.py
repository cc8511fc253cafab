"""What people hand the CLI: JSON values, YAML/JSON files of definitions, times, durations.

Definitions are the proto3 JSON mapping of the API's messages (field names snake_case
or lowerCamelCase, enums by name, durations as "30s", timestamps in RFC 3339), read with
google.protobuf.json_format: never serialized protobuf bytes. Every mistake is a
click.BadParameter / UsageError, so it ends with exit code 2 and a message that says
which file, which document and which field.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sys
from pathlib import Path
from typing import Any, TypeVar

import click
import yaml
from google.protobuf import duration_pb2, json_format, timestamp_pb2
from google.protobuf.message import Message

M = TypeVar("M", bound=Message)

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def read_text(path: str) -> str:
    """A file's text; "-" is standard input."""
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise click.BadParameter(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise click.BadParameter(f"{path} is not UTF-8 text") from None


def load_documents(path: str) -> list[dict[str, Any]]:
    """Every document of a JSON or YAML file (a list is several documents), each an object."""
    text = read_text(path)
    try:
        if path.endswith(".json"):
            loaded: list[Any] = [json.loads(text)]
        else:  # YAML, which also reads JSON; `---` separates documents
            loaded = [d for d in yaml.safe_load_all(text) if d is not None]
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise click.BadParameter(f"{path} is not valid JSON or YAML: {exc}") from None
    documents: list[Any] = []
    for item in loaded:
        documents.extend(item if isinstance(item, list) else [item])
    if not documents:
        raise click.BadParameter(f"{path} holds no document")
    for index, document in enumerate(documents, 1):
        if not isinstance(document, dict):
            raise click.BadParameter(
                f"{path}: document {index} is a {type(document).__name__}, not an object"
            )
    return documents


def parse_message(data: dict[str, Any], message_class: type[M], where: str) -> M:
    """`data` (proto3 JSON) as a `message_class`; unknown fields are mistakes."""
    try:
        return json_format.ParseDict(_jsonable(data), message_class())
    except json_format.ParseError as exc:
        raise click.BadParameter(f"{where}: {exc}") from None


def _jsonable(value: Any) -> Any:
    """YAML's dates and times as the RFC 3339 strings proto3 JSON expects."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, dt.date):
        return f"{value.isoformat()}T00:00:00Z"
    return value


def json_value(text: str, what: str) -> Any:
    """A JSON value given inline, or `@path` for a file's content ("@-": stdin)."""
    source = read_text(text[1:]) if text.startswith("@") else text
    try:
        return json.loads(source)
    except json.JSONDecodeError as exc:
        hint = " (strings need JSON quotes: '\"text\"')" if not text.startswith("@") else ""
        raise click.BadParameter(f"{what} is not valid JSON: {exc}{hint}") from None


def parse_duration(text: str, what: str) -> float:
    """Seconds of "90", "1.5s", "250ms", "5m", "1h30m", "7d", "2w"."""
    value = text.strip().lower()
    try:
        return float(value)
    except ValueError:
        pass
    matches = list(_DURATION.finditer(value))
    if not matches or "".join(m.group(0) for m in matches) != value:
        raise click.BadParameter(f"{what}: {text!r} is not a duration (e.g. 90s, 5m, 1h30m, 7d)")
    return sum(float(m.group(1)) * _UNITS[m.group(2)] for m in matches)


def parse_time(text: str, what: str, now: dt.datetime | None = None) -> dt.datetime:
    """An instant: RFC 3339 / ISO 8601 (UTC when it names no zone), "now", or "now-1h"."""
    now = now or dt.datetime.now(dt.UTC)
    value = text.strip()
    if value.lower() == "now":
        return now
    if value.lower().startswith("now-"):
        return now - dt.timedelta(seconds=parse_duration(value[4:], what))
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"{what}: {text!r} is not a time (e.g. 2025-01-31T08:00:00Z, now, now-2h)"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def timestamp(value: dt.datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value.astimezone(dt.UTC))
    return out


def duration(seconds: float) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromNanoseconds(round(seconds * 1e9))
    return out


def labels(pairs: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        if not equals or not key:
            raise click.BadParameter(f"label {pair!r} is not KEY=VALUE")
        out[key] = value
    return out
