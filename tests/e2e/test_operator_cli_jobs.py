"""The operator CLI's jobs, schedules, submit and runs commands: the real `conveyor`
binary against a real platform, on the embedded default and on PostgreSQL + Redis."""

from __future__ import annotations

import json
import textwrap
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from conveyor_core.settings import CoreSettings
from tests.helpers.cli import NAMESPACE, conveyor, operator_platform
from tests.helpers.e2e import eventually

JOB_FILE = """\
name: greet
description: says hello
queue: jobs
target:
  command:
    argv: ["sh", "-c", "echo hello from the cli; echo a warning >&2"]
retry_policy: {maximum_attempts: 1}
schedules:
  - name: hourly
    interval: {every: 3600s}
    overlap_policy: OVERLAP_POLICY_ALLOW_ALL
"""


@pytest.fixture
async def address(
    core: CoreSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[str]:
    async with operator_platform(core, tmp_path, monkeypatch) as address:
        yield address


async def test_jobs_apply_is_idempotent_and_a_changed_file_makes_a_new_version(
    address: str, tmp_path: Path
) -> None:
    path = tmp_path / "greet.yaml"
    path.write_text(JOB_FILE)
    applied = (await conveyor(address, "jobs", "apply", "-f", str(path), "-o", "json")).json()
    assert [item["result"] for item in applied] == ["created", "created"]
    assert applied[1]["schedule"]["name"] == f"namespaces/{NAMESPACE}/jobs/greet/schedules/hourly"

    again = (await conveyor(address, "-o", "json", "jobs", "apply", "-f", str(path))).json()
    assert [item["result"] for item in again] == ["unchanged", "unchanged"]

    path.write_text(JOB_FILE.replace("says hello", "says hello twice"))
    table = await conveyor(address, "jobs", "apply", "-f", str(path))
    assert table.code == 0
    assert "updated" in table.stdout and "v2" in table.stdout, table.stdout

    # What `jobs get -o json` prints is a file `jobs apply` takes back unchanged.
    got = (await conveyor(address, "jobs", "get", "greet", "-o", "json")).json()
    assert got["version"] == 2 and got["description"] == "says hello twice"
    assert got["target"]["command"]["argv"][0] == "sh"
    exported = tmp_path / "exported.json"
    exported.write_text(json.dumps(got))
    round_trip = (
        await conveyor(address, "-o", "json", "jobs", "apply", "-f", str(exported))
    ).json()
    assert round_trip[0]["result"] == "unchanged"

    listed = (await conveyor(address, "-o", "json", "jobs", "list")).json()
    assert [job["name"] for job in listed] == [f"namespaces/{NAMESPACE}/jobs/greet"]
    people = await conveyor(address, "jobs", "list")
    assert "greet" in people.stdout and "command: sh -c" in people.stdout


async def test_jobs_run_now_then_its_run_and_logs(address: str, tmp_path: Path) -> None:
    path = tmp_path / "greet.yaml"
    path.write_text(JOB_FILE)
    assert (await conveyor(address, "jobs", "apply", "-f", str(path))).code == 0

    watched = await conveyor(address, "jobs", "run", "greet", "--watch")
    assert watched.code == 0, watched
    assert "succeeded" in watched.stdout

    # JSON lines: the order and the run's name first, then the run's updates.
    streamed = await conveyor(address, "-o", "json", "jobs", "run", "greet", "--watch")
    assert streamed.code == 0, streamed
    lines = streamed.json_lines()
    run_name = lines[0]["run"]
    assert lines[-1]["run"]["state"] == "RUN_STATE_SUCCEEDED"

    runs = (await conveyor(address, "-o", "json", "runs", "list", "--job", "greet")).json()
    assert run_name in [r["name"] for r in runs]  # with the schedule's first fire's run
    run = next(r for r in runs if r["name"] == run_name)
    assert run["state"] == "RUN_STATE_SUCCEEDED" and run["job_version"] == 1
    run_id = run["name"].rsplit("/", 1)[-1]

    got = (await conveyor(address, "-o", "json", "runs", "get", run_id)).json()
    assert got["name"] == run["name"] and got["attempts"][0]["number"] == 1
    people = await conveyor(address, "runs", "get", run["work_order"])  # by its order's name
    assert run["name"] in people.stdout and "iteration 1" in people.stdout

    logs = await conveyor(address, "runs", "logs", run_id)
    assert logs.code == 0
    assert "hello from the cli" in logs.stdout and "a warning" in logs.stdout
    assert "iteration 1 stdout" in logs.stdout
    outputs = (await conveyor(address, "-o", "json", "runs", "logs", run_id)).json()
    assert {o["display_name"]: o["text"] for o in outputs}["iteration 1 stdout"] == (
        "hello from the cli\n"
    )

    listed = (await conveyor(address, "-o", "json", "runs", "outputs", run_id)).json()
    assert {o["display_name"]: o["size_bytes"] for o in listed} == {
        "iteration 1 stdout": len("hello from the cli\n"),
        "iteration 1 stderr": len("a warning\n"),
    }
    assert "text" not in listed[0]
    only = await conveyor(address, "runs", "logs", run_id, "--name", "iteration 1 stderr")
    assert "a warning" in only.stdout and "hello from the cli" not in only.stdout

    steps = (await conveyor(address, "-o", "json", "runs", "steps", run_id)).json()
    assert steps[0]["kind"] == "iteration"

    # One RunJob call: journaled by the scheduler, with the order's correlation id.
    async def journaled() -> list[dict[str, object]] | None:
        tail = await conveyor(
            address, "-o", "json", "journal", "tail", "--type", "scheduler.job.run",
            "--subject", run_id,
        )  # fmt: skip
        return tail.json_lines() or None

    [record] = await eventually(journaled, "the scheduler's scheduler.job.run record", 60)
    assert record["subjects"]["job"] == f"namespaces/{NAMESPACE}/jobs/greet"
    assert record["correlation_id"] == lines[0]["correlation_id"]

    # The same request id runs once: the second call answers with the first order.
    key = f"cli-{uuid.uuid4()}"
    first = await conveyor(address, "-o", "json", "jobs", "run", "greet", "--request-id", key)
    second = await conveyor(address, "-o", "json", "jobs", "run", "greet", "--request-id", key)
    assert first.json()["work_order"] == second.json()["work_order"]
    assert second.json()["already_exists"] is True
    pinned = await conveyor(address, "-o", "json", "jobs", "run", "greet", "--version", "9")
    assert pinned.code == 3 and "NOT_FOUND" in pinned.stderr
    unknown = await conveyor(address, "jobs", "run", "greet", "--endpoint", "nope")
    assert unknown.code == 1 and "endpoints" in unknown.stderr


async def test_schedules_pause_resume_trigger_backfill_preview_and_fires(
    address: str, tmp_path: Path
) -> None:
    path = tmp_path / "greet.yaml"
    path.write_text(JOB_FILE)
    assert (await conveyor(address, "jobs", "apply", "-f", str(path))).code == 0
    schedule = "greet/hourly"

    listed = (await conveyor(address, "-o", "json", "schedules", "list")).json()
    assert [s["name"].rsplit("/", 1)[-1] for s in listed] == ["hourly"]
    assert (await conveyor(address, "schedules", "get", schedule)).stdout.count("every 1h") == 1
    held = tmp_path / "held.yaml"
    held.write_text("job: greet\nname: held\ninterval: {every: 60s}\npaused: true\n")
    created = (await conveyor(address, "-o", "json", "schedules", "apply", "-f", str(held))).json()
    assert created[0]["schedule"]["paused"] is True, "a new schedule is created paused"
    assert (await conveyor(address, "schedules", "delete", "greet/held", "--yes")).code == 0

    paused = (await conveyor(address, "-o", "json", "schedules", "pause", schedule)).json()
    assert paused["paused"] is True
    resumed = (await conveyor(address, "-o", "json", "schedules", "resume", schedule)).json()
    assert resumed["paused"] is False

    preview = (
        await conveyor(address, "-o", "json", "schedules", "preview", schedule, "--count", "3")
    ).json()
    assert len(preview) == 3 and all(t.endswith("Z") for t in preview)

    fire = (await conveyor(address, "-o", "json", "schedules", "trigger", schedule)).json()
    assert fire["kind"] == "FIRE_KIND_TRIGGERED"

    backfill = await conveyor(
        address, "-o", "json", "schedules", "backfill", schedule, "--start", "now-3h"
    )
    assert backfill.code == 0, backfill
    assert len(backfill.json()["fires"]) >= 2  # hourly slots of the last three hours

    async def fires_ran() -> list[dict[str, object]] | None:
        fires = (await conveyor(address, "-o", "json", "schedules", "fires", schedule)).json()
        done = [f for f in fires if f["outcome"] == "FIRE_OUTCOME_SUCCEEDED"]
        return fires if len(done) == len(fires) else None

    fires = await eventually(fires_ran, "every fire's run succeeded", limit=90)
    assert {f["kind"] for f in fires} >= {"FIRE_KIND_TRIGGERED", "FIRE_KIND_BACKFILL"}
    runs = (await conveyor(address, "-o", "json", "runs", "list", "--schedule", schedule)).json()
    assert len(runs) == len(fires)
    table = await conveyor(address, "schedules", "fires", schedule)
    assert "triggered" in table.stdout and "backfill" in table.stdout

    deleted = await conveyor(address, "schedules", "delete", schedule, "--yes")
    assert deleted.code == 0
    assert (await conveyor(address, "schedules", "get", schedule)).code == 3


async def test_submit_a_task_by_name_with_json_args_and_wait_for_its_result(address: str) -> None:
    result = await conveyor(
        address, "-o", "json", "submit", "add", "[40, 2]", "--queue", "tasks", "--wait"
    )
    assert result.code == 0, result
    document = result.json()
    assert document["result"] == 42
    assert document["work_order"]["spec"]["payload"]["json"] == {
        "task": "add",
        "args": [40, 2],
        "kwargs": {},
    }

    people = await conveyor(
        address, "submit", "add", '{"a": 1, "b": 2}', "--queue", "tasks", "--wait"
    )
    assert people.code == 0 and people.stdout.strip().endswith("3")

    failed = await conveyor(
        address, "submit", "decline", json.dumps({"key": uuid.uuid4().hex}), "--queue", "tasks",
        "--wait",
    )  # fmt: skip
    assert failed.code == 4
    assert "card 4242 declined" in failed.stderr

    payload = await conveyor(
        address, "-o", "json", "submit", "--queue", "parked", "--payload", '{"to": "a@example.com"}'
    )
    order = payload.json()["work_order"]
    assert order["spec"]["payload"] == {
        "content_type": "application/json",
        "json": {"to": "a@example.com"},
    }

    invocation = textwrap.dedent(
        """\
        target:
          command: {argv: ["sh", "-c", "echo ad-hoc"]}
        """
    )
    adhoc = await conveyor(
        address, "submit", "--queue", "jobs", "--invocation", "-", "--watch",
        stdin=invocation.encode(),
    )  # fmt: skip
    assert adhoc.code == 0, adhoc
    assert "succeeded" in adhoc.stdout
