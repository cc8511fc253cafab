"""A client in another language: Node.js (@grpc/grpc-js) drives the queue and the event
store through the contracts in protos/, authenticates with a bearer token, and decodes the
rich error details from the trailers, as a Go or TypeScript service would.

The Node packages are installed by `make test` into .tools/node_modules (pinned in the
Makefile); without Node or them the test skips, except under CI, where that is a failure.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import google.rpc
import pytest

from conveyor_core.runtime import Platform
from conveyor_core.settings import CoreSettings
from tests.helpers.security import Principals

ROOT = Path(__file__).resolve().parents[2]
NODE_MODULES = ROOT / ".tools" / "node_modules"
CLIENT = Path(__file__).parent / "node" / "client.js"
PACKAGES = ("@grpc/grpc-js", "@grpc/proto-loader", "protobufjs")


def node() -> str:
    found = shutil.which("node")
    missing = [p for p in PACKAGES if not (NODE_MODULES / p / "package.json").is_file()]
    if found and not missing:
        return found
    reason = "node is not installed" if not found else f"{missing} not in {NODE_MODULES}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}: `make test` installs them")
    pytest.skip(f"{reason} (make test installs them)")


async def test_a_node_client_submits_leases_completes_publishes_and_reads_errors(
    tmp_path: Path,
) -> None:
    executable = node()
    principals = Principals(tmp_path / "principals.json")
    token = principals.add("node-app", ["interop"], ["submitter", "worker", "viewer", "operator"])
    core = CoreSettings(data_dir=tmp_path, auth_tokens_file=str(principals.path))
    platform = Platform(core, ["queue", "events"])
    port = await platform.start("127.0.0.1:0")
    googleapis = Path(google.rpc.__path__[0]).parents[1]  # the folder holding google/rpc/*.proto
    try:
        process = await asyncio.create_subprocess_exec(
            executable,
            str(CLIENT),
            f"127.0.0.1:{port}",
            token,
            str(ROOT / "protos"),
            str(googleapis),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "NODE_PATH": str(NODE_MODULES)},
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    finally:
        await platform.stop(grace=0)
    assert process.returncode == 0, stderr.decode()
    seen = json.loads(stdout)

    assert seen["submitted"].startswith("namespaces/interop/queues/jobs/workOrders/")
    assert seen["resubmitted"] == seen["submitted"], "the idempotency key holds across languages"
    assert seen["leased_payload"] == "from node"
    assert seen["completed_state"] == "WORK_ORDER_STATE_SUCCEEDED"
    assert seen["published_sequence"] == "1"

    stale = seen["stale"]
    assert stale["code"] == "FAILED_PRECONDITION"
    invalid = seen["invalid"]
    assert invalid["code"] == "INVALID_ARGUMENT"
    (bad_request,) = [d for d in invalid["details"] if d["type"] == "google.rpc.BadRequest"]
    assert [v["field"] for v in bad_request["field_violations"]] == ["work_order.priority"]
    info = next(d for d in invalid["details"] if d["type"] == "google.rpc.ErrorInfo")
    assert info["domain"] == "conveyor.dev"
    assert info["metadata"]["correlation_id"] == "node-client-1"

    assert seen["anonymous"]["code"] == "UNAUTHENTICATED"
    foreign = seen["foreign"]
    assert foreign["code"] == "PERMISSION_DENIED"
    info = next(d for d in foreign["details"] if d["type"] == "google.rpc.ErrorInfo")
    assert info["metadata"]["namespace"] == "elsewhere"


async def test_a_node_service_submits_a_python_task_by_name_and_reads_its_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.helpers import sdk_app

    executable = node()
    monkeypatch.setenv("CONVEYOR_EXECUTOR_LEASE_WAIT_SECONDS", "0.2")
    hosting = {"apps": [sdk_app.app], "only_app_queues": True}
    platform = Platform(
        CoreSettings(data_dir=tmp_path), ["queue", "events", "executor"], hosting=hosting
    )
    port = await platform.start("127.0.0.1:0")
    googleapis = Path(google.rpc.__path__[0]).parents[1]
    try:
        process = await asyncio.create_subprocess_exec(
            executable,
            str(CLIENT.parent / "task.js"),
            f"127.0.0.1:{port}",
            str(ROOT / "protos"),
            str(googleapis),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "NODE_PATH": str(NODE_MODULES)},
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    finally:
        await platform.stop(grace=0)
    assert process.returncode == 0, stderr.decode()
    assert json.loads(stdout) == {
        "state": "WORK_ORDER_STATE_SUCCEEDED",
        "content_type": "application/json",
        "result": 42,
    }
