"""The console's protobuf-to-JSON conversion and its error shape."""

from __future__ import annotations

import json

from conveyor.common.v1 import types_pb2 as common
from conveyor.executor.v1 import messages_pb2 as xm
from conveyor.queue.v1 import messages_pb2 as qm
from conveyor_console import convert
from conveyor_console.web import from_conveyor_error
from conveyor_sdk._errors import FieldViolation, NotFound, PermissionDenied


def test_enums_lose_their_prefix_and_are_read_back_in_any_case() -> None:
    assert convert.enum_name(xm.RunState.DESCRIPTOR, xm.RUN_STATE_RUNNING) == "RUNNING"
    assert convert.enum_name(qm.WorkOrderState.DESCRIPTOR, 99) == "99"
    assert convert.enum_number(xm.RunState.DESCRIPTOR, "running") == xm.RUN_STATE_RUNNING
    assert convert.enum_number(xm.RunState.DESCRIPTOR, "RUN_STATE_FAILED") == xm.RUN_STATE_FAILED
    assert convert.enum_number(xm.RunState.DESCRIPTOR, "unspecified") is None
    assert convert.enum_number(xm.RunState.DESCRIPTOR, "sleeping") is None


def test_messages_become_plain_json() -> None:
    order = qm.WorkOrder(name="namespaces/a/queues/q/workOrders/1", state=qm.WORK_ORDER_STATE_DEAD)
    order.spec.payload.CopyFrom(common.Payload(data=b'{"n": 1}', content_type="application/json"))
    order.spec.labels["team"] = "billing"
    order.spec.start_to_close_timeout.FromMilliseconds(1500)
    order.create_time.FromJsonString("2026-01-02T03:04:05.250Z")
    out = convert.message(order)
    assert out is not None
    json.dumps(out)  # serializable as it is
    assert out["state"] == "DEAD"
    assert out["spec"]["payload"] == {
        "content_type": "application/json",
        "size_bytes": 8,
        "json": {"n": 1},
    }
    assert out["spec"]["labels"] == {"team": "billing"}
    assert out["spec"]["start_to_close_timeout"] == 1.5
    assert out["create_time"] == "2026-01-02T03:04:05.250000Z"
    assert out["update_time"] is None and out["last_failure"] is None


def test_payloads_that_are_not_json_are_text_or_base64() -> None:
    assert (
        convert.payload(common.Payload(data=b"hello", content_type="text/plain"))["text"] == "hello"
    )
    assert convert.payload(common.Payload(data=b"not json"))["text"] == "not json"
    assert convert.payload(common.Payload(data=b"\xff\x00"))["base64"] == "/wA="


def test_output_refs_follow_steps_then_failures_without_repeats() -> None:
    run = {"failure": {"details": {"log": "outputs/c"}}, "attempts": []}
    steps = [
        {"attributes": {"stdout": "outputs/a", "x": 1}, "failure": None},
        {"attributes": {"stderr": "outputs/b", "again": "outputs/a"}, "failure": None},
    ]
    assert convert.output_refs(run, steps) == ["a", "b", "c"]


def test_errors_keep_their_details_and_map_to_http_statuses() -> None:
    status, body = from_conveyor_error(
        PermissionDenied(
            message="needs operator in wf",
            code="PERMISSION_DENIED",
            reason="MISSING_ROLE",
            correlation_id="c1",
            field_violations=(FieldViolation("name", "x"),),
        )
    )
    assert status == 403
    assert body["error"] == {
        "status": 403,
        "code": "PERMISSION_DENIED",
        "message": "needs operator in wf",
        "field_violations": [{"field": "name", "description": "x"}],
        "reason": "MISSING_ROLE",
        "correlation_id": "c1",
    }
    assert from_conveyor_error(NotFound(message="no", code="NOT_FOUND"))[0] == 404
