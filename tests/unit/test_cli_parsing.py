"""What people type, read by the operator CLI: short names, times, durations, files."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import click
import pytest

from conveyor.scheduler.v1 import messages_pb2 as scheduler_pb
from conveyor_cli import documents, names, render


def test_short_names_become_resource_names_in_the_namespace() -> None:
    assert names.job("hello", "ops") == "namespaces/ops/jobs/hello"
    assert names.job("namespaces/x/jobs/y", "ops") == "namespaces/x/jobs/y"
    assert names.schedule("hello/nightly", "ops") == "namespaces/ops/jobs/hello/schedules/nightly"
    assert names.run("abc", "ops") == "namespaces/ops/runs/abc"
    assert names.run("namespaces/x/queues/jobs/workOrders/abc", "ops") == "namespaces/x/runs/abc"
    assert names.event("orders/12", "ops") == "namespaces/ops/topics/orders/events/12"
    for bad in ("hello", "a/b/c"):
        with pytest.raises(click.BadParameter, match="JOB/SCHEDULE"):
            names.schedule(bad, "ops")
    with pytest.raises(click.BadParameter, match="TOPIC/SEQUENCE"):
        names.event("orders/x", "ops")
    assert names.workflow("shop", "ops") == "namespaces/ops/workflows/shop"
    assert names.workflow_id("namespaces/ops/workflows/shop") == "shop"
    assert names.session("s1", "ops") == "namespaces/ops/sessions/s1"
    assert names.handler_run("r1", "ops") == "namespaces/ops/handlerRuns/r1"
    mutation = "namespaces/x/handlerRuns/r1/mutation"
    assert names.handler_run(mutation, "ops") == "namespaces/x/handlerRuns/r1"
    with pytest.raises(click.BadParameter, match="handler run"):
        names.handler_run(" ", "ops")


def test_times_and_durations() -> None:
    now = dt.datetime(2025, 1, 31, 8, 0, tzinfo=dt.UTC)
    assert documents.parse_time("now-1h30m", "--start", now) == now - dt.timedelta(minutes=90)
    assert documents.parse_time("2025-01-31T07:00:00Z", "--start") == now - dt.timedelta(hours=1)
    assert documents.parse_time("2025-01-31T07:00:00", "--start").tzinfo == dt.UTC
    assert documents.parse_duration("250ms", "d") == 0.25
    assert documents.parse_duration("7d", "d") == 7 * 86400
    assert documents.parse_duration("90", "d") == 90
    for bad in ("soon", "5 minutes", "1h-2m"):
        with pytest.raises(click.BadParameter):
            documents.parse_duration(bad, "--older-than")
    with pytest.raises(click.BadParameter, match="not a time"):
        documents.parse_time("yesterday", "--start")


def test_definition_files_are_proto3_json_and_mistakes_name_the_document(tmp_path: Path) -> None:
    path = tmp_path / "jobs.yaml"
    path.write_text("name: a\nqueue: q\n---\n- name: b\n- name: c\n  priority: 2\n")
    docs = documents.load_documents(str(path))
    assert [d["name"] for d in docs] == ["a", "b", "c"]
    job = documents.parse_message(docs[2], scheduler_pb.Job, "jobs.yaml: document 3")
    assert job.priority == 2
    with pytest.raises(click.BadParameter, match=r"document 1: .*priorty"):
        documents.parse_message({"priorty": 1}, scheduler_pb.Job, "f: document 1")
    path.write_text("- 1\n")
    with pytest.raises(click.BadParameter, match="document 1 is a int"):
        documents.load_documents(str(path))


def test_json_output_decodes_payloads_and_keeps_every_scalar() -> None:
    from conveyor.common.v1 import job_pb2, types_pb2

    invocation = job_pb2.JobInvocation(job="namespaces/a/jobs/b", job_version=3)
    payload = types_pb2.Payload(
        data=invocation.SerializeToString(),
        content_type="application/x-protobuf; messageType=conveyor.common.v1.JobInvocation",
    )
    decoded = render.message_json(payload)
    assert decoded["message"]["job"] == "namespaces/a/jobs/b"
    assert decoded["message"]["job_version"] == 3
    text = render.message_json(types_pb2.Payload(data=b"hi", content_type="text/plain"))
    assert text == {"content_type": "text/plain", "text": "hi"}
    binary = render.message_json(types_pb2.Payload(data=b"\xff", content_type="image/png"))
    assert binary["base64"] == "/w=="
    job = render.message_json(scheduler_pb.Job(name="n"))
    assert job["priority"] == 0 and job["queue"] == "" and "target" not in job
