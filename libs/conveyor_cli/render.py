"""What the CLI prints: Rich tables for people, JSON for scripts, errors on stderr.

JSON output is the proto3 JSON mapping with the proto's own field names (snake_case, as
in the .proto files and in the files `apply` reads), every scalar field present, int64 as
numbers, and payloads decoded: JSON and text payloads as values, protobuf payloads (a
JobInvocation, a JobResult) as their messages, other bytes as base64.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from google.protobuf import descriptor_pool, json_format, message_factory
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from conveyor_cli.session import Exit, Options
from conveyor_sdk._errors import ConveyorError

_consoles: dict[bool, Console] = {}

STATE_STYLES = {
    "succeeded": "green",
    "consumed": "green",
    "submitted": "cyan",
    "running": "cyan",
    "leased": "cyan",
    "reserved": "cyan",
    "pending": "yellow",
    "queued": "yellow",
    "buffered": "yellow",
    "failed": "red",
    "dead": "red",
    "aborted": "red",
    "missed": "red",
    "cancelled": "magenta",
    "skipped": "magenta",
    "paused": "yellow",
}


def console(stderr: bool = False) -> Console:
    """stdout's (or stderr's) console; wide when not a terminal, so pipes get whole rows."""
    if stderr not in _consoles:
        stream = sys.stderr if stderr else sys.stdout
        width = None if stream.isatty() or "COLUMNS" in os.environ else 200
        _consoles[stderr] = Console(stderr=stderr, width=width, highlight=False, soft_wrap=False)
    return _consoles[stderr]


# -- JSON ------------------------------------------------------------------------------


def message_json(message: Message) -> Any:
    """`message` as JSON data (see the module docstring)."""
    descriptor = message.DESCRIPTOR
    if descriptor.full_name == "conveyor.common.v1.Payload":
        return payload_json(message)
    if descriptor.file.package == "google.protobuf":  # Timestamp, Duration, Struct, ...
        return json_format.MessageToDict(message)
    out: dict[str, Any] = {}
    for field in descriptor.fields:
        oneof = field.containing_oneof
        if oneof is not None and message.WhichOneof(oneof.name) != field.name:
            continue
        value = getattr(message, field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            out[field.name] = {str(k): _value_json(value_field, v) for k, v in value.items()}
        elif field.is_repeated:
            out[field.name] = [_value_json(field, item) for item in value]
        elif field.message_type is not None:
            if message.HasField(field.name):
                out[field.name] = message_json(value)
        else:
            out[field.name] = _value_json(field, value)
    return out


def _value_json(field: Any, value: Any) -> Any:  # a FieldDescriptor (upb or Python)
    if field.message_type is not None:
        return message_json(value)
    if field.enum_type is not None:
        known = field.enum_type.values_by_number.get(value)
        return known.name if known is not None else value
    if field.type == FieldDescriptor.TYPE_BYTES:
        return base64.b64encode(value).decode()
    return value


def payload_json(payload: Message) -> dict[str, Any]:
    """A Payload as {"content_type", and one of "json", "text", "message", "base64"}."""
    content_type: str = payload.content_type  # type: ignore[attr-defined]
    data: bytes = payload.data  # type: ignore[attr-defined]
    out: dict[str, Any] = {"content_type": content_type}
    decoded = decode_payload(content_type, data)
    if decoded is not None:
        out.update(decoded)
    else:
        out["base64"] = base64.b64encode(data).decode()
    return out


def decode_payload(content_type: str, data: bytes) -> dict[str, Any] | None:
    media = content_type.split(";")[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        try:
            return {"json": json.loads(data or b"null")}
        except (UnicodeDecodeError, json.JSONDecodeError):
            return None
    if media == "application/x-protobuf" and "messagetype=" in content_type.lower():
        type_name = content_type.split("=", 1)[1].strip()
        try:
            descriptor = descriptor_pool.Default().FindMessageTypeByName(type_name)
            decoded = message_factory.GetMessageClass(descriptor).FromString(data)
        except (KeyError, DecodeError):
            return None
        return {"message": message_json(decoded)}
    if media.startswith("text/") or (not media and _is_text(data)):
        return {"text": data.decode("utf-8", "replace")}
    return None


def _is_text(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def print_json(data: Any, *, lines: bool = False) -> None:
    """One JSON document (indented), or one compact line of a JSON-lines stream."""
    if lines:
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    else:
        text = json.dumps(data, indent=2, ensure_ascii=False)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


# -- people's formats -------------------------------------------------------------------


def short_enum(message: Message, field: str) -> str:
    """An enum field's value name without its prefix, lower case: "succeeded"."""
    descriptor: Any = message.DESCRIPTOR.fields_by_name[field].enum_type
    value = descriptor.values_by_number.get(getattr(message, field))
    if value is None or value.number == 0:
        return "-"
    prefix = _enum_prefix(descriptor.values[0].name)
    return value.name.removeprefix(prefix).lower()


def _enum_prefix(unspecified: str) -> str:
    return unspecified.removesuffix("UNSPECIFIED")


def state(text: str) -> Text:
    """A state word in its colour."""
    return Text(text, style=STATE_STYLES.get(text, ""))


def cell(value: Any) -> Text:
    """A table cell: Text as it is, anything else as plain text (never read as markup)."""
    if isinstance(value, Text):
        return value
    return Text("-" if value is None or value == "" else str(value))


def row(out: Table, *values: Any) -> None:
    out.add_row(*(cell(v) for v in values))


def when(message: Message, field: str) -> str:
    """A Timestamp field in local time, "-" when unset."""
    if not message.HasField(field):
        return "-"
    value = getattr(message, field).ToDatetime(dt.UTC).astimezone()
    return value.strftime("%Y-%m-%d %H:%M:%S")


def timestamp_text(timestamp: Message) -> str:
    value = timestamp.ToDatetime(dt.UTC).astimezone()  # type: ignore[attr-defined]
    return value.isoformat(timespec="seconds")


def seconds(message: Message, field: str) -> str:
    """A Duration field as "1.5s", "2m3s", "-" when unset."""
    if not message.HasField(field):
        return "-"
    total = getattr(message, field).ToTimedelta().total_seconds()
    return duration_text(total)


def duration_text(total: float) -> str:
    if total < 60:
        return f"{total:.3g}s"
    minutes, secs = divmod(int(total), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    parts = [(days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")]
    return "".join(f"{n}{unit}" for n, unit in parts if n) or "0s"


def last_segment(name: str) -> str:
    return name.rsplit("/", 1)[-1] if name else "-"


def table(*columns: str, title: str | None = None) -> Table:
    out = Table(title=title, header_style="bold", title_justify="left", expand=False)
    for column in columns:
        out.add_column(column, overflow="fold")
    return out


def details(rows: Iterable[tuple[str, Any]], title: str | None = None) -> Table:
    """A two-column table of one resource's fields."""
    out = Table(title=title, show_header=False, box=None, title_justify="left", padding=(0, 2))
    out.add_column(style="bold")
    out.add_column(overflow="fold")
    for key, value in rows:
        out.add_row(Text(key), cell(value))
    return out


def mapping(values: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(values.items())) or "-"


def show(*renderables: Any) -> None:
    for renderable in renderables:
        console().print(renderable)


def emit(options: Options, data: Any, *renderables: Any) -> None:
    """JSON `data` under --output json, else the tables."""
    if options.json:
        print_json(data)
    else:
        show(*renderables)


def emit_list(options: Options, items: Sequence[Message], out: Table, empty: str) -> None:
    if options.json:
        print_json([message_json(item) for item in items])
    elif not items:
        console(stderr=True).print(f"[dim]{escape(empty)}[/]")
    else:
        show(out)


def done(options: Options, message: Message, text: str) -> None:
    """The result of an action: the resource as JSON, or one plain line for people."""
    if options.json:
        print_json(message_json(message))
    else:
        console().print(Text(text))


# -- errors -----------------------------------------------------------------------------


def report_error(options: Options, error: ConveyorError, hint: str = "") -> None:
    """The platform's rich error details on stderr (JSON under --output json)."""
    if options.json:
        body = {
            "code": error.code,
            "message": error.message,
            "reason": error.reason,
            "field_violations": [
                {"field": v.field, "description": v.description} for v in error.field_violations
            ],
            "correlation_id": error.correlation_id,
            "metadata": dict(error.metadata),
        }
        sys.stderr.write(json.dumps({"error": body}, ensure_ascii=False) + "\n")
        return
    err = console(stderr=True)
    err.print(f"[bold red]error[/]: {escape(error.code)}: {escape(error.message)}")
    for violation in error.field_violations:
        if f"{violation.field}: {violation.description}" == error.message:
            continue  # the message is this one violation
        err.print(f"  [bold]{escape(violation.field)}[/]: {escape(violation.description)}")
    if error.reason:
        err.print(f"  reason: {escape(error.reason)}")
    extra = {k: v for k, v in error.metadata.items() if k != "correlation_id"}
    if extra:
        err.print(f"  details: {escape(mapping(extra))}")
    if error.correlation_id:
        err.print(f"  correlation id: {escape(error.correlation_id)}")
    if hint:
        err.print(f"  [dim]{escape(hint)}[/]")


def report_failure(options: Options, message: str, code: Exit) -> None:
    if options.json:
        sys.stderr.write(json.dumps({"error": {"message": message, "exit_code": int(code)}}) + "\n")
    else:
        console(stderr=True).print(f"[bold red]error[/]: {escape(message)}")
