"""The task wire format: how a task call and its result travel through the queue.

Any language can submit a Python task by name and read its result
(docs/sdk.md, "Wire format"):

* queue: `namespaces/{namespace}/queues/{queue}` (the queue the task declares);
* payload content type `application/vnd.conveyor.task+json`, body UTF-8 JSON
  `{"task": "<name>", "args": [...], "kwargs": {...}}`;
* result: the work order's `result` payload, content type `application/json`,
  body the JSON of the return value; a failure is the order's `last_failure`
  (type, message, retryable, details).

Arguments and results are JSON values; pydantic models and dataclasses become
JSON objects on the way in and are rebuilt from the annotations on the way out.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import math
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

TASK_CONTENT_TYPE = "application/vnd.conveyor.task+json"
RESULT_CONTENT_TYPE = "application/json"

__all__ = [
    "RESULT_CONTENT_TYPE",
    "TASK_CONTENT_TYPE",
    "NotJson",
    "TaskCall",
    "decode_call",
    "dump_json",
    "encode_call",
    "from_json",
    "to_json_value",
]


class NotJson(TypeError):
    """A value that has no JSON form (the message says where it is)."""


@dataclasses.dataclass(frozen=True)
class TaskCall:
    task: str
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]


def to_json_value(value: Any, where: str = "value") -> Any:
    """`value` as plain JSON data: pydantic models, dataclasses, enums, UUIDs and datetimes
    included; raises NotJson naming `where` for anything else (sets, bytes, objects, NaN)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise NotJson(f"{where} is {value}, which JSON cannot hold")
        return value
    if isinstance(value, enum.Enum):
        return to_json_value(value.value, where)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    dump = getattr(value, "model_dump", None)
    if callable(dump):  # pydantic v2
        return dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: to_json_value(getattr(value, f.name), f"{where}.{f.name}")
            for f in dataclasses.fields(value)
        }
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise NotJson(f"{where} has a key {key!r} that is not a string")
            out[key] = to_json_value(item, f"{where}.{key}")
        return out
    if isinstance(value, list | tuple):
        return [to_json_value(item, f"{where}[{i}]") for i, item in enumerate(value)]
    raise NotJson(f"{where} is a {type(value).__name__}, which is not JSON")


def dump_json(value: Any, where: str = "value") -> bytes:
    return json.dumps(
        to_json_value(value, where), separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def encode_call(task: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> bytes:
    body = {
        "task": task,
        "args": [to_json_value(a, f"argument {i}") for i, a in enumerate(args)],
        "kwargs": {k: to_json_value(v, f"argument {k!r}") for k, v in kwargs.items()},
    }
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def decode_call(data: bytes) -> TaskCall:
    """The call in a task payload; ValueError says what is wrong with it."""
    try:
        body = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"task payload is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ValueError("task payload must be a JSON object {task, args, kwargs}")
    task, args, kwargs = body.get("task"), body.get("args", []), body.get("kwargs", {})
    if not isinstance(task, str) or not task:
        raise ValueError('task payload has no "task" name (a non-empty string)')
    if not isinstance(args, list):
        raise ValueError('task payload "args" must be a JSON array')
    if not isinstance(kwargs, dict):
        raise ValueError('task payload "kwargs" must be a JSON object')
    return TaskCall(task, tuple(args), kwargs)


def from_json(value: Any, annotation: Any) -> Any:
    """Rebuild a pydantic model or dataclass from JSON data when `annotation` names one;
    other values are returned as they are."""
    if not isinstance(annotation, type) or not isinstance(value, dict):
        return value
    validate = getattr(annotation, "model_validate", None)
    if callable(validate):
        return validate(value)
    if dataclasses.is_dataclass(annotation):
        return annotation(**value)
    return value
