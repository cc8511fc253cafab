"""Protobuf messages to the console's JSON: plain names, ISO times, seconds, decoded payloads.

Enums lose their type prefix (RUN_STATE_RUNNING -> "RUNNING"), unset messages are
null, timestamps are RFC 3339 strings in UTC, durations are seconds, payloads are
{"content_type", "size_bytes", "text" | "json" | "base64"}.
"""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

_TYPE = FieldDescriptor
_PREFIXES: dict[str, str] = {}


def enum_prefix(enum: EnumDescriptor) -> str:
    """RunState -> "RUN_STATE_"."""
    prefix = _PREFIXES.get(enum.full_name)
    if prefix is None:
        prefix = re.sub(r"(?<!^)(?=[A-Z])", "_", enum.name).upper() + "_"
        _PREFIXES[enum.full_name] = prefix
    return prefix


def enum_name(enum: EnumDescriptor, number: int) -> str:
    value = enum.values_by_number.get(number)
    if value is None:
        return str(number)
    return value.name.removeprefix(enum_prefix(enum))


def enum_number(enum: EnumDescriptor, name: str) -> int | None:
    """ "running" or "RUN_STATE_RUNNING" -> the number; None when unknown."""
    upper = name.strip().upper()
    value = enum.values_by_name.get(upper) or enum.values_by_name.get(enum_prefix(enum) + upper)
    return None if value is None or value.number == 0 else value.number


def timestamp(value: Any) -> str | None:
    if not value.seconds and not value.nanos:
        return None
    moment = datetime.fromtimestamp(value.seconds + value.nanos / 1e9, tz=UTC)
    return moment.isoformat().replace("+00:00", "Z")


def payload(value: Any) -> dict[str, Any]:
    data: bytes = value.data
    out: dict[str, Any] = {"content_type": value.content_type, "size_bytes": len(data)}
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        out["base64"] = base64.b64encode(data).decode()
        return out
    if "json" in value.content_type or not value.content_type:
        try:
            out["json"] = json.loads(text) if text else None
            return out
        except ValueError:
            pass
    out["text"] = text
    return out


def _scalar(field: Any, value: Any) -> Any:  # a FieldDescriptor (upb or Python)
    if field.type == _TYPE.TYPE_ENUM:
        return enum_name(field.enum_type, value)
    if field.type == _TYPE.TYPE_BYTES:
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return base64.b64encode(value).decode()
    return value


def _value(field: Any, value: Any) -> Any:
    if field.type != _TYPE.TYPE_MESSAGE:
        return _scalar(field, value)
    name = field.message_type.full_name
    if name == "google.protobuf.Timestamp":
        return timestamp(value)
    if name == "google.protobuf.Duration":
        return value.seconds + value.nanos / 1e9
    if name in {"google.protobuf.Struct", "google.protobuf.Value"}:
        return json_format.MessageToDict(value)
    if name == "conveyor.common.v1.Payload":
        return payload(value)
    return message(value)


def message(msg: Message | None) -> dict[str, Any] | None:
    """A message as JSON-ready data (None for None)."""
    if msg is None:
        return None
    out: dict[str, Any] = {}
    for field in msg.DESCRIPTOR.fields:
        value = getattr(msg, field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            out[field.name] = {k: _value(value_field, v) for k, v in value.items()}
        elif field.is_repeated:
            out[field.name] = [_value(field, v) for v in value]
        elif field.type == _TYPE.TYPE_MESSAGE and not msg.HasField(field.name):
            out[field.name] = None
        else:
            out[field.name] = _value(field, value)
    return out


def messages(items: Any) -> list[dict[str, Any]]:
    return [message(item) for item in items]  # type: ignore[misc]


def leaf(name: str) -> str:
    """The last segment of a resource name: namespaces/a/runs/r1 -> r1."""
    return name.rpartition("/")[2]


def output_refs(run: dict[str, Any], steps: list[dict[str, Any]]) -> list[str]:
    """The outputs a run kept ("outputs/<id>"), in the order its steps and failures name them."""
    found: list[str] = []

    def take(values: Any) -> None:
        for value in values if isinstance(values, list | tuple) else [values]:
            if isinstance(value, str) and value.startswith("outputs/") and value not in found:
                found.append(value)

    for step in steps:
        for value in (step.get("attributes") or {}).values():
            take(value)
        take(list(((step.get("failure") or {}).get("details") or {}).values()))
    for attempt in run.get("attempts") or []:
        take(list(((attempt.get("failure") or {}).get("details") or {}).values()))
    take(list(((run.get("failure") or {}).get("details") or {}).values()))
    return [ref.removeprefix("outputs/") for ref in found]
