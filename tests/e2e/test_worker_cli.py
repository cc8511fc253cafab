"""`conveyor worker module:app` as a developer runs it: a platform process, a worker process
hosting tests.helpers.sdk_app, and the SDK's client submitting to them."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import conveyor
from tests.e2e.test_cli import cli_env, finished, free_port, serving
from tests.e2e.test_cli import conveyor as conveyor_cli
from tests.helpers.e2e import eventually

ROOT = Path(__file__).resolve().parents[2]


async def test_a_worker_process_hosts_an_app_and_runs_its_tasks(tmp_path: Path) -> None:
    port = free_port()
    address = f"127.0.0.1:{port}"
    env = cli_env(CONVEYOR_LISTEN_ADDRESS=address, CONVEYOR_DATA_DIR=str(tmp_path))
    platform = await conveyor_cli("serve", "queue", "events", env=env)
    worker = None
    try:
        await serving(address, "conveyor.queue.v1.WorkOrderQueueService")
        worker_env = {
            **cli_env(CONVEYOR_DATA_DIR=str(tmp_path / "worker")),
            "PYTHONPATH": str(ROOT),
            "CONVEYOR_EXECUTOR_LEASE_WAIT_SECONDS": "0.5",
        }
        worker = await conveyor_cli(
            "worker", "tests.helpers.sdk_app:app", "--address", address, env=worker_env
        )
        async with conveyor.Client(address) as client:
            handle = await client.submit(
                conveyor.load_app("tests.helpers.sdk_app:app").tasks["add"], 40, 2
            )

            async def done() -> object:
                status = await handle.status()
                return status if status.state.done else None

            await eventually(done, "the worker ran the task", limit=60)
            assert await handle.result(timeout=5) == 42
    finally:
        for process in (worker, platform):
            if process is not None and process.returncode is None:
                process.send_signal(signal.SIGTERM)
                await asyncio.wait_for(process.communicate(), 60)


async def test_a_wrong_app_spec_is_one_clear_line_and_exit_code_2() -> None:
    code, output = await finished("worker", "no_such_module:app", env=cli_env())
    assert code == 2
    assert "cannot import 'no_such_module'" in output and "Traceback" not in output
    code, output = await finished("worker", "tests.helpers.sdk_app", env=cli_env())
    assert code == 2 and "module:attribute" in output
