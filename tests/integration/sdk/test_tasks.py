"""Python tasks end to end: the SDK's client submits, an executor hosting the app runs them,
the client reads results and classified failures back. Both backends."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import conveyor
from conveyor.executor.v1 import messages_pb2 as executor_pb
from conveyor.executor.v1 import service_pb2 as executor_rpc
from conveyor.executor.v1 import service_pb2_grpc as executor_grpc
from conveyor_core.grpc import create_channel
from conveyor_core.runtime import Platform
from conveyor_core.settings import CoreSettings
from tests.helpers import sdk_app
from tests.helpers.e2e import eventually


@pytest.fixture
async def address(
    core: CoreSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[str]:
    for name, value in {
        "WORKSPACE_ROOT": str(tmp_path / "ws"),
        "LEASE_WAIT_SECONDS": "0.2",
        "HEARTBEAT_INTERVAL_SECONDS": "0.1",
        "ABORT_GRACE_SECONDS": "2",
    }.items():
        monkeypatch.setenv(f"CONVEYOR_EXECUTOR_{name}", value)
    hosting = {"apps": [sdk_app.app], "only_app_queues": True}
    platform = Platform(core, ["queue", "events", "executor"], hosting=hosting)
    port = await platform.start("127.0.0.1:0")
    yield f"127.0.0.1:{port}"
    await platform.stop(grace=1)


@pytest.fixture
async def client(address: str) -> AsyncIterator[conveyor.Client]:
    async with conveyor.Client(address, namespace="sdk") as client:
        yield client


async def get_run(address: str, name: str) -> executor_pb.Run:
    async with create_channel(address) as channel:
        reply = await executor_grpc.ExecutorServiceStub(channel).GetRun(
            executor_rpc.GetRunRequest(name=name)
        )
    return reply.run


async def test_async_and_sync_tasks_return_their_results_and_are_recorded_as_runs(
    client: conveyor.Client, address: str
) -> None:
    handle = await client.submit(sdk_app.add, 2, b=3)
    assert await handle.result(timeout=30) == 5
    by_name = await client.submit("shout", text="hi", queue="sync")
    shouted = await by_name.result(timeout=30)
    assert shouted["text"] == "HI" and shouted["attempt"] == 1
    assert shouted["thread"].startswith("conveyor-task"), "sync tasks run in the thread pool"
    run = await get_run(address, handle.run)
    assert run.kind == executor_pb.RUN_KIND_TASK
    assert run.state == executor_pb.RUN_STATE_SUCCEEDED
    assert run.job == "namespaces/sdk/tasks/add"


async def test_many_submits_at_once_share_batches_and_each_gets_its_own_answer(
    client: conveyor.Client, address: str
) -> None:
    """Concurrent submits go out together (BatchSubmitWorkOrders), their completions and
    run records too; a bad submit among them is refused alone, with its own details."""

    async def bad() -> Exception:
        with pytest.raises(conveyor.InvalidArgument) as refused:
            await client.submit("add", 1, 2, queue="Not A Queue")
        return refused.value

    submits = [client.submit(sdk_app.add, i, 1) for i in range(150)]
    handles = await asyncio.gather(*submits[:75], bad(), *submits[75:])
    refused = handles.pop(75)
    assert isinstance(refused, conveyor.InvalidArgument) and refused.field_violations
    assert len({h.name for h in handles}) == 150, "one order per submit"
    results = await asyncio.gather(*(h.result(timeout=60) for h in handles))
    assert results == [i + 1 for i in range(150)]
    run = await get_run(address, handles[149].run)
    assert run.state == executor_pb.RUN_STATE_SUCCEEDED and len(run.attempts) == 1


async def test_dataclass_arguments_and_results_round_trip(client: conveyor.Client) -> None:
    handle = await client.submit(sdk_app.charge, sdk_app.Order("o-1", 21))
    assert await handle.result(timeout=30) == sdk_app.Receipt("o-1", 42)


async def test_a_failing_task_is_retried_until_it_succeeds(client: conveyor.Client) -> None:
    key = uuid.uuid4().hex
    handle = await client.submit(sdk_app.flaky, key, failures=2)
    assert await handle.result(timeout=30) == 3
    status = await handle.status()
    assert status.state is conveyor.TaskState.SUCCEEDED and status.attempt == 3


async def test_a_non_retryable_exception_fails_at_once_with_its_type_and_traceback(
    client: conveyor.Client, address: str
) -> None:
    key = uuid.uuid4().hex
    handle = await client.submit(sdk_app.decline, key)
    with pytest.raises(conveyor.TaskFailed) as failed:
        await handle.result(timeout=30)
    error = failed.value
    assert error.error_type == "handler_logic" and not error.retryable
    assert "card 4242 declined" in error.message
    assert error.details["exception"] == "tests.helpers.sdk_app.CardDeclined"
    assert error.details["traceback"].startswith("outputs/")
    assert sdk_app.ATTEMPTS[key] == 1, "never retried"


async def test_a_task_past_its_timeout_fails_classified_as_timeout(
    client: conveyor.Client,
) -> None:
    handle = await client.submit(sdk_app.slow)
    with pytest.raises(conveyor.TaskFailed) as failed:
        await handle.result(timeout=30)
    assert failed.value.error_type == "timeout"
    assert "timeout of 0.3s" in failed.value.message


async def test_progress_usage_and_cancellation_of_a_running_sync_task(
    client: conveyor.Client, address: str
) -> None:
    key = uuid.uuid4().hex
    handle = await client.submit(sdk_app.gated, key)

    async def halfway() -> conveyor.TaskStatus | None:
        status = await handle.status()
        return status if status.progress_percent == 50 else None

    status = await eventually(halfway, "progress 50% reported through heartbeats")
    assert status.state is conveyor.TaskState.LEASED and status.progress_message == "halfway"
    await handle.cancel("test")
    with pytest.raises(conveyor.TaskCancelled):
        await handle.result(timeout=30)
    run = await eventually(
        lambda: _ended(address, handle.run), "the run ends after the cancellation"
    )
    assert run.state == executor_pb.RUN_STATE_ABORTED

    other = uuid.uuid4().hex
    sdk_app.GATES[other] = threading.Event()
    sdk_app.GATES[other].set()
    opened = await client.submit(sdk_app.gated, other)
    assert await opened.result(timeout=30) == "opened"
    run = await get_run(address, opened.run)
    assert (run.usage.input_tokens, run.usage.output_tokens) == (10, 5)
    assert run.usage.cost_usd == pytest.approx(0.25)


async def _ended(address: str, name: str) -> executor_pb.Run | None:
    run = await get_run(address, name)
    done = {executor_pb.RUN_STATE_ABORTED, executor_pb.RUN_STATE_FAILED}
    return run if run.state in done else None


async def test_bad_input_is_a_clear_error_and_nothing_is_lost(client: conveyor.Client) -> None:
    unknown = await client.submit("refund", 1, queue="tasks")
    with pytest.raises(conveyor.TaskFailed) as failed:
        await unknown.result(timeout=30)
    assert failed.value.error_type == "invalid_input"
    assert "task not found: refund (namespace 'sdk' defines: add," in failed.value.message

    misfit = await client.submit("add", 1, 2, 3, queue="tasks")
    with pytest.raises(conveyor.TaskFailed, match="arguments do not fit task add"):
        await misfit.result(timeout=30)

    with pytest.raises(TypeError, match="argument 0 is a set, which is not JSON"):
        await client.submit("add", {1}, 2)
    with pytest.raises(TypeError):
        await client.submit(sdk_app.add, 1)  # b is missing: refused before it is sent

    not_json = await client.submit(sdk_app.returns_a_set)
    with pytest.raises(conveyor.TaskFailed, match="is a set, which is not JSON") as failed:
        await not_json.result(timeout=30)
    assert not failed.value.retryable


async def test_platform_errors_are_typed_with_their_details(client: conveyor.Client) -> None:
    with pytest.raises(conveyor.InvalidArgument) as refused:
        await client.submit("add", 1, 2, queue="Not A Queue")
    assert refused.value.field_violations, "the field violations reach the caller"
    assert refused.value.correlation_id
    with pytest.raises(conveyor.NotFound):
        await client.handle(f"namespaces/sdk/queues/tasks/workOrders/{uuid.uuid4()}").status()


async def test_an_idempotency_key_submits_once(client: conveyor.Client) -> None:
    key = f"add-{uuid.uuid4().hex}"
    first = await client.submit(sdk_app.add, 1, 1, idempotency_key=key)
    again = await client.submit(sdk_app.add, 1, 1, idempotency_key=key)
    assert again.name == first.name and again.already_submitted
    assert await again.result(timeout=30) == 2


async def test_the_sync_client_submits_and_waits(address: str) -> None:
    def script() -> object:
        with conveyor.SyncClient(address, namespace="sdk") as client:
            handle = client.submit(sdk_app.add, 20, 22)
            states = [status.state for status in handle.watch(poll_interval=0.05)]
            assert states[-1] is conveyor.TaskState.SUCCEEDED
            return handle.result(timeout=30)

    assert await asyncio.to_thread(script) == 42
