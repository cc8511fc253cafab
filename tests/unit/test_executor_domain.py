"""Executor domain pieces without I/O: watch buffers, payload decoding, names, secrets."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from conveyor.common.v1 import job_pb2, types_pb2
from conveyor.queue.v1 import messages_pb2 as queue_pb
from conveyor_core.errors import InvalidArgument
from conveyor_executor.domain import names
from conveyor_executor.domain.failure import ErrorType
from conveyor_executor.domain.invocation import JOB_INVOCATION_CONTENT_TYPE, decode_order
from conveyor_executor.domain.model import (
    Progress,
    Run,
    RunKind,
    RunOrigin,
    RunRef,
    RunState,
)
from conveyor_executor.secrets import SecretSource
from conveyor_executor.watch import RunUpdate, Subscription

NOW = datetime(2030, 1, 1, tzinfo=UTC)
REF = RunRef("test", "r1")


def _run(state: RunState) -> Run:
    return Run(REF, RunOrigin("wo", RunKind.HTTP), state, NOW, NOW)


def test_a_slow_watcher_keeps_state_changes_and_at_most_capacity_progress() -> None:
    subscription = Subscription(capacity=3)
    subscription.push(RunUpdate(run=_run(RunState.RUNNING)))
    for i in range(100):
        subscription.push(RunUpdate(progress=Progress(i, f"p{i}", NOW)))
    subscription.push(RunUpdate(run=_run(RunState.SUCCEEDED)))
    items = [subscription._items.popleft() for _ in range(len(subscription))]
    assert len(items) <= 3
    assert [u.run.state for u in items if u.run] == [RunState.RUNNING, RunState.SUCCEEDED]
    assert subscription.dropped >= 98
    # The newest progress survives; the oldest were dropped.
    assert [u.progress.message for u in items if u.progress] == ["p99"]


def _order(payload: types_pb2.Payload) -> queue_pb.WorkOrder:
    return queue_pb.WorkOrder(
        name="namespaces/test/queues/jobs/workOrders/x",
        spec=queue_pb.WorkOrderSpec(payload=payload),
        traceparent="00-" + "a" * 32 + "-" + "b" * 16 + "-01",
    )


def test_decode_reads_a_job_invocation_and_its_origin() -> None:
    invocation = job_pb2.JobInvocation(
        job="namespaces/test/jobs/j",
        job_version=2,
        schedule="namespaces/test/schedules/s",
        target=job_pb2.JobTarget(http=job_pb2.HttpTarget()),
    )
    invocation.slot_time.FromDatetime(NOW)
    decoded = decode_order(
        _order(
            types_pb2.Payload(
                data=invocation.SerializeToString(),
                content_type=JOB_INVOCATION_CONTENT_TYPE.replace("; ", ";"),
            )
        ),
        1024,
    )
    assert decoded.error is None
    assert decoded.origin.kind is RunKind.HTTP
    assert decoded.origin.slot_time == NOW
    assert decoded.origin.trace_id == "a" * 32


@pytest.mark.parametrize(
    "payload",
    [
        types_pb2.Payload(data=b"x", content_type="text/plain"),
        types_pb2.Payload(data=b"\xff", content_type=JOB_INVOCATION_CONTENT_TYPE),
        types_pb2.Payload(data=b"", content_type=JOB_INVOCATION_CONTENT_TYPE),  # no target
        types_pb2.Payload(data=b"\x00" * 2000, content_type=JOB_INVOCATION_CONTENT_TYPE),
    ],
)
def test_anything_else_is_invalid_input_never_retried(payload: types_pb2.Payload) -> None:
    decoded = decode_order(_order(payload), 1024)
    assert decoded.error is not None
    assert decoded.error.type is ErrorType.INVALID_INPUT
    assert not decoded.error.retryable


def test_names_parse_and_reject() -> None:
    assert names.parse_run("namespaces/test/runs/abc-1", "name") == REF.__class__("test", "abc-1")
    for bad in ("", "namespaces/test", "namespaces/test/jobs/x", "namespaces/t/runs/a/b"):
        with pytest.raises(InvalidArgument):
            names.parse_run(bad, "name")
    with pytest.raises(InvalidArgument):
        names.parse_output("namespaces/test/runs/r/outputs/not-hex", "name")


def test_secrets_come_from_files_then_environment(tmp_path: Path) -> None:
    (tmp_path / "api-token").write_text("from-file\n")
    source = SecretSource(
        tmp_path,
        {"CONVEYOR_SECRET_API_TOKEN": "env", "CONVEYOR_SECRET_OTHER": "o"},
        "CONVEYOR_SECRET_",
    )
    assert source.get("api-token") == "from-file"
    assert source.get("other") == "o"
    assert source.get("missing") is None
    assert source.get("../etc/passwd") is None
    assert SecretSource(None, {"CONVEYOR_SECRET_OTHER": "o"}, "").get("other") is None
