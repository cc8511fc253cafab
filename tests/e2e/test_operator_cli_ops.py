"""The operator CLI's live and operational commands: `runs watch` in a pseudo-terminal,
abort, queues, dead letters, topics and events, the journal, errors and exit codes; the
real `conveyor` binary against a real platform, embedded and on PostgreSQL + Redis."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from conveyor.common.v1 import types_pb2
from conveyor.events.v1 import messages_pb2 as events_pb
from conveyor.events.v1 import service_pb2 as events_rpc
from conveyor.events.v1 import service_pb2_grpc as events_grpc
from conveyor.executor.v1 import service_pb2 as executor_rpc
from conveyor.executor.v1 import service_pb2_grpc as executor_grpc
from conveyor_core.grpc import create_channel
from conveyor_core.settings import CoreSettings
from tests.helpers import sdk_app
from tests.helpers.cli import NAMESPACE, PtyProcess, conveyor, operator_platform, start_conveyor
from tests.helpers.e2e import eventually


@pytest.fixture
async def address(
    core: CoreSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[str]:
    async with operator_platform(core, tmp_path, monkeypatch) as address:
        yield address


async def submit_gated(address: str) -> tuple[str, str]:
    """A task that reports 50 % and waits for its gate: (gate key, run id), once it runs."""
    key = uuid.uuid4().hex
    submitted = await conveyor(
        address, "-o", "json", "submit", "gated", json.dumps({"key": key}), "--queue", "tasks"
    )
    order = submitted.json()["work_order"]
    run = f"namespaces/{NAMESPACE}/runs/{order['id']}"

    async def halfway() -> bool:
        async with create_channel(address) as channel:
            stub = executor_grpc.ExecutorServiceStub(channel)
            try:
                reply = await stub.GetRun(executor_rpc.GetRunRequest(name=run))
            except Exception:
                return False
        return reply.run.progress.percent == 50

    await eventually(halfway, "the gated task reported 50 %", limit=60)
    return key, order["id"]


def open_gate(key: str) -> None:
    sdk_app.GATES.setdefault(key, threading.Event()).set()


async def test_runs_watch_draws_progress_in_a_terminal_until_the_run_succeeds(
    address: str,
) -> None:
    key, run_id = await submit_gated(address)
    watch = await PtyProcess.start(address, "runs", "watch", run_id)

    async def drawn_halfway() -> bool:
        return "halfway" in watch.text and "50%" in watch.text

    try:
        await eventually(drawn_halfway, "the progress bar at 50 % with the task's message")
        assert "running" in watch.text and "\x1b[" in watch.raw, "drawn for a terminal"
        open_gate(key)
        assert await watch.wait() == 0, watch.text
    finally:
        watch.close()
    assert f"run namespaces/{NAMESPACE}/runs/{run_id} succeeded" in watch.text
    assert "100%" in watch.text


async def test_an_aborted_run_ends_the_watch_with_exit_code_4_and_json_lines(
    address: str,
) -> None:
    key, run_id = await submit_gated(address)
    watch = await start_conveyor(address, "-o", "json", "runs", "watch", run_id)
    try:
        assert watch.stdout is not None
        first = json.loads(await asyncio.wait_for(watch.stdout.readline(), 60))
        assert first["run"]["state"] == "RUN_STATE_RUNNING"
        missing = await conveyor(address, "runs", "abort", run_id)
        assert missing.code == 2 and "--reason" in missing.stderr
        aborted = await conveyor(address, "runs", "abort", run_id, "--reason", "operator test")
        assert aborted.code == 0, aborted
        out, _ = await asyncio.wait_for(watch.communicate(), 60)
    finally:
        open_gate(key)
        if watch.returncode is None:
            watch.kill()
            await watch.wait()
    assert watch.returncode == 4
    updates = [json.loads(line) for line in out.decode().splitlines()]
    assert updates[-1]["run"]["state"] == "RUN_STATE_ABORTED"
    ended = (await conveyor(address, "-o", "json", "runs", "list", "--state", "aborted")).json()
    assert [r["name"].rsplit("/", 1)[-1] for r in ended] == [run_id]


async def test_queues_list_stats_pause_and_resume(address: str) -> None:
    for _ in range(2):
        parked = await conveyor(address, "submit", "--queue", "parked", "--payload", "{}")
        assert parked.code == 0, parked
    queues = (await conveyor(address, "-o", "json", "queues", "list")).json()
    assert "parked" in [q["queue_id"] for q in queues]
    stats = (await conveyor(address, "-o", "json", "queues", "stats", "parked")).json()
    depth = {d["state"]: int(d["count"]) for d in stats["depth"]}
    assert depth["WORK_ORDER_STATE_QUEUED"] == 2
    every = await conveyor(address, "queues", "stats")
    assert "parked" in every.stdout and "DISPATCH/S" in every.stdout

    paused = (await conveyor(address, "-o", "json", "queues", "pause", "parked")).json()
    assert paused["paused"] is True
    assert "paused" in (await conveyor(address, "queues", "list")).stdout
    resumed = (await conveyor(address, "-o", "json", "queues", "resume", "parked")).json()
    assert resumed["paused"] is False


async def test_dead_letters_list_and_redrive_with_a_reason(address: str) -> None:
    key = uuid.uuid4().hex
    submitted = await conveyor(
        address, "-o", "json", "submit", "flaky", json.dumps({"key": key, "failures": 100}),
        "--queue", "tasks",
    )  # fmt: skip
    order = submitted.json()["work_order"]

    async def dead() -> list[dict[str, object]] | None:
        found = (await conveyor(address, "-o", "json", "dead-letters", "list")).json()
        return found if any(o["name"] == order["name"] for o in found) else None

    letters = await eventually(dead, "the flaky task out of attempts, DEAD", limit=90)
    letter = next(o for o in letters if o["name"] == order["name"])
    assert letter["attempt"] == letter["max_attempts"] > 1
    assert letter["last_failure"]["type"]
    table = await conveyor(address, "dead-letters", "list", "--queue", "tasks")
    assert order["id"] in table.stdout and letter["last_failure"]["message"] in table.stdout

    missing = await conveyor(address, "dead-letters", "redrive", "tasks")
    assert missing.code == 2 and "--reason" in missing.stderr
    redriven = await conveyor(
        address, "-o", "json", "dead-letters", "redrive", "tasks", "--reason", "downstream fixed"
    )
    assert redriven.json()["redriven_count"] == 1
    history = (await conveyor(address, "-o", "json", "dead-letters", "history", "tasks")).json()
    assert history[0]["reason"] == "downstream fixed" and "@" in history[0]["requested_by"]


async def publish(address: str, topic: str, *titles: str) -> None:
    async with create_channel(address) as channel:
        events = events_grpc.EventStoreServiceStub(channel)
        await events.CreateTopic(
            events_rpc.CreateTopicRequest(
                parent=f"namespaces/{NAMESPACE}", topic_id=topic, topic=events_pb.Topic()
            )
        )
        drafts = [
            events_pb.EventDraft(
                message_id=f"m-{i}",
                title=title,
                payload=types_pb2.Payload(
                    data=json.dumps({"order": i}).encode(), content_type="application/json"
                ),
            )
            for i, title in enumerate(titles, 1)
        ]
        await events.PublishEvents(
            events_rpc.PublishEventsRequest(
                parent=f"namespaces/{NAMESPACE}/topics/{topic}", events=drafts
            )
        )


async def test_topics_and_events_list_get_skip_and_stale(address: str) -> None:
    await publish(address, "orders", "order 1 placed", "order 2 placed")
    topics = (await conveyor(address, "-o", "json", "topics", "list")).json()
    assert [t["topic_id"] for t in topics] == ["orders"]
    topic = (await conveyor(address, "-o", "json", "topics", "get", "orders")).json()
    assert topic["stats"]["pending"] == 2

    listed = (await conveyor(address, "-o", "json", "events", "list", "orders")).json()
    assert [e["title"] for e in listed] == ["order 1 placed", "order 2 placed"]
    assert listed[0]["payload"] == {"content_type": "application/json", "json": {"order": 1}}
    got = await conveyor(address, "events", "get", "orders/1")
    assert "order 1 placed" in got.stdout and '"order": 1' in got.stdout

    missing = await conveyor(address, "events", "skip", "orders/1")
    assert missing.code == 2 and "--reason" in missing.stderr
    skipped = await conveyor(
        address, "-o", "json", "events", "skip", "orders/1", "--reason", "duplicate order"
    )
    event = skipped.json()
    assert event["status"] == "EVENT_STATUS_SKIPPED" and event["skip_reason"] == "duplicate order"
    pending = await conveyor(
        address, "-o", "json", "events", "list", "orders", "--status", "pending"
    )
    assert [e["sequence"] for e in pending.json()] == [2]
    unknown = await conveyor(address, "events", "get", "orders/99")
    assert unknown.code == 3

    stale = (await conveyor(address, "-o", "json", "events", "stale", "--older-than", "1ms")).json()
    assert [e["title"] for e in stale] == ["order 2 placed"]
    assert (await conveyor(address, "-o", "json", "events", "stale")).json() == []


async def test_journal_tail_filters_by_correlation_id_and_follows_a_subject(
    address: str,
) -> None:
    submitted = await conveyor(
        address, "-o", "json", "submit", "--queue", "parked", "--payload", "1"
    )
    order = submitted.json()["work_order"]

    async def queued() -> list[dict[str, object]] | None:
        tail = await conveyor(
            address, "-o", "json", "journal", "tail", "--correlation-id", order["correlation_id"]
        )
        records = tail.json_lines()
        return records if records else None

    records = await eventually(queued, "the submit's journal record", limit=60)
    assert {r["type"] for r in records} == {"queue.work_order.queued"}
    assert all(r["correlation_id"] == order["correlation_id"] for r in records)

    follow = await start_conveyor(
        address, "-o", "json", "journal", "tail", "-f", "--subject", order["id"]
    )
    try:
        assert follow.stdout is not None
        first = json.loads(await asyncio.wait_for(follow.stdout.readline(), 60))
        assert first["type"] == "queue.work_order.queued"
        async with create_channel(address) as channel:
            from conveyor.queue.v1 import service_pb2 as queue_rpc
            from conveyor.queue.v1 import service_pb2_grpc as queue_grpc

            await queue_grpc.WorkOrderQueueServiceStub(channel).CancelWorkOrder(
                queue_rpc.CancelWorkOrderRequest(name=order["name"], reason="journal test")
            )
        second = json.loads(await asyncio.wait_for(follow.stdout.readline(), 60))
        assert second["type"] == "queue.work_order.cancelled"
        follow.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(follow.wait(), 30) == 130
    finally:
        if follow.returncode is None:
            follow.kill()
            await follow.wait()

    people = await conveyor(address, "journal", "tail", "--subject", order["id"], "--lines", "1")
    assert people.stdout.count("queue.work_order.") == 1 and "cancelled" in people.stdout


async def submit_parked(address: str) -> str:
    submitted = await conveyor(
        address, "-o", "json", "submit", "--queue", "parked", "--payload", "{}"
    )
    return str(submitted.json()["work_order"]["id"])


async def test_journal_tail_shows_the_last_lines_then_follows_new_records(address: str) -> None:
    ids = [await submit_parked(address) for _ in range(4)]
    queued = ("--type", "queue.work_order.queued")

    async def all_journaled() -> list[dict[str, object]] | None:
        tail = await conveyor(address, "-o", "json", "journal", "tail", *queued, "--lines", "0")
        records = tail.json_lines()
        return records if len(records) == 4 else None

    every = await eventually(all_journaled, "the four submits journaled", 60)
    assert [r["subjects"]["work_order"] for r in every] == ids
    last_two = await conveyor(address, "-o", "json", "journal", "tail", *queued, "--lines", "2")
    records = last_two.json_lines()
    assert [r["subjects"]["work_order"] for r in records] == ids[2:], "the last two, in order"
    assert records[0]["position"] < records[1]["position"]

    follow = await start_conveyor(
        address, "-o", "json", "journal", "tail", "-f", *queued, "--lines", "1"
    )
    try:
        assert follow.stdout is not None
        first = json.loads(await asyncio.wait_for(follow.stdout.readline(), 60))
        assert first["subjects"]["work_order"] == ids[-1]
        new = await submit_parked(address)
        second = json.loads(await asyncio.wait_for(follow.stdout.readline(), 60))
        assert second["subjects"]["work_order"] == new, "followed past the last line"
        follow.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(follow.wait(), 30) == 130
    finally:
        if follow.returncode is None:
            follow.kill()
            await follow.wait()


async def test_errors_are_the_rich_details_on_stderr_with_exit_codes(
    address: str, tmp_path: Path
) -> None:
    missing = await conveyor(address, "jobs", "get", "nope")
    assert missing.code == 3 and missing.stdout == ""
    assert "NOT_FOUND" in missing.stderr and "correlation id" in missing.stderr

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: Not_A_Valid_Id\ntarget: {command: {argv: ['true']}}\n")
    refused = await conveyor(address, "jobs", "apply", "-f", str(bad))
    assert refused.code == 1 and "INVALID_ARGUMENT" in refused.stderr
    assert "name: job 'Not_A_Valid_Id' must match" in refused.stderr, "the field violation"
    as_json = await conveyor(address, "-o", "json", "jobs", "apply", "-f", str(bad))
    error = json.loads(as_json.stderr)["error"]
    assert error["code"] == "INVALID_ARGUMENT" and error["field_violations"]
    assert error["correlation_id"]

    unknown_field = tmp_path / "typo.yaml"
    unknown_field.write_text("name: hello\ntargett: {}\n")
    typo = await conveyor(address, "jobs", "apply", "-f", str(unknown_field))
    assert typo.code == 2 and "targett" in typo.stderr
    assert (await conveyor(address, "jobs", "apply", "-f", str(tmp_path / "none.yaml"))).code == 2
    assert (await conveyor(address, "runs", "list", "--state", "bogus")).code == 2
    assert (await conveyor(address, "submit", "add", "[1,")).code == 2

    unreachable = await conveyor(address, "--address", "127.0.0.1:1", "queues", "list")
    assert unreachable.code == 5 and "UNAVAILABLE" in unreachable.stderr
    version = await conveyor(address, "--version")
    assert version.code == 0 and version.stdout.startswith("conveyor ")
