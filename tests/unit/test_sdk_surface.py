"""The SDK's pure parts: durations, retry options, the wire format, app validation."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import pytest

import conveyor
from conveyor_sdk._options import seconds_of
from conveyor_sdk._wire import NotJson, decode_call, dump_json, encode_call, from_json


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("30s", 30), ("1h30m", 5400), ("250ms", 0.25), (1.5, 1.5), (dt.timedelta(minutes=2), 120)],
)
def test_durations_read_as_people_write_them(value: object, seconds: float) -> None:
    assert seconds_of(value) == pytest.approx(seconds)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["", "5 parsecs", "-1s", -1, float("inf"), True, "1h 30"])
def test_bad_durations_are_refused_with_their_name(value: object) -> None:
    with pytest.raises(ValueError, match="timeout"):
        seconds_of(value, "timeout")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "options",
    [
        {"max_attempts": 0},
        {"backoff": 0.5},
        {"jitter": 1.5},
        {"backoff": float("nan")},
        {"non_retryable": (int,)},
    ],
)
def test_bad_retry_options_are_refused(options: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="Retry"):
        conveyor.Retry(**options)  # type: ignore[arg-type]


@dataclasses.dataclass
class Point:
    x: int
    y: int


def test_the_wire_format_is_plain_json_that_any_language_writes() -> None:
    body = encode_call("move", [Point(1, 2)], {"when": dt.datetime(2026, 1, 2, tzinfo=dt.UTC)})
    assert json.loads(body) == {
        "task": "move",
        "args": [{"x": 1, "y": 2}],
        "kwargs": {"when": "2026-01-02T00:00:00+00:00"},
    }
    call = decode_call(b'{"task": "move", "args": [{"x": 1, "y": 2}]}')
    assert call.kwargs == {} and from_json(call.args[0], Point) == Point(1, 2)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xff", "not JSON"),
        (b"[1]", "JSON object"),
        (b'{"args": []}', '"task" name'),
        (b'{"task": "t", "args": {}}', '"args" must be'),
        (b'{"task": "t", "kwargs": []}', '"kwargs" must be'),
    ],
)
def test_malformed_task_payloads_say_what_is_wrong(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_call(data)


@pytest.mark.parametrize("value", [{1, 2}, b"x", float("nan"), {1: "a"}, object()])
def test_values_without_a_json_form_are_refused(value: object) -> None:
    with pytest.raises(NotJson):
        dump_json({"inner": [value]}, "result")


def test_apps_refuse_bad_names_duplicates_and_options() -> None:
    with pytest.raises(conveyor.AppError, match="namespace"):
        conveyor.App("Billing\n")
    app = conveyor.App("billing")

    @app.task
    def once() -> None: ...

    with pytest.raises(conveyor.AppError, match="already has a task named 'once'"):
        app.task(name="once")(lambda: None)
    with pytest.raises(conveyor.AppError, match="priority"):
        app.task(priority=-1)
    with pytest.raises(conveyor.AppError, match="queue"):
        app.task(queue="Emails")
    with pytest.raises(conveyor.AppError, match="defines no tasks"):
        conveyor.App("empty").validate()


def test_load_app_names_what_is_wrong() -> None:
    assert conveyor.load_app("tests.helpers.sdk_app:app").namespace == "sdk"
    with pytest.raises(conveyor.AppError, match="module:attribute"):
        conveyor.load_app("tests.helpers.sdk_app")
    with pytest.raises(conveyor.AppError, match="cannot import"):
        conveyor.load_app("no_such_module_here:app")
    with pytest.raises(conveyor.AppError, match=r"not a conveyor\.App"):
        conveyor.load_app("tests.helpers.sdk_app:ATTEMPTS")


def test_a_task_called_directly_is_a_plain_call() -> None:
    app = conveyor.App("plain")

    @app.task(queue="q")
    def double(x: int) -> int:
        return 2 * x

    assert double(4) == 8 and double.name == "double" and app.queues == ("q",)
