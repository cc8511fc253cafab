"""Request bytes that do not decode answer INVALID_ARGUMENT (not UNKNOWN) on every RPC of every
service, with no ERROR in the log: a generic channel sends raw bytes to a real Platform."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import grpc
import pytest

from conveyor.events.v1 import service_pb2 as events_rpc
from conveyor.executor.v1 import service_pb2 as executor_rpc
from conveyor.queue.v1 import service_pb2 as queue_rpc
from conveyor.scheduler.v1 import service_pb2 as scheduler_rpc
from conveyor_core.grpc import rich_error_details
from conveyor_core.runtime import Platform
from conveyor_core.settings import CoreSettings

#: Field 1 (a string in SubmitWorkOrderRequest) holding invalid UTF-8: the issue's example.
INVALID_UTF8 = bytes.fromhex("0a06fffefdfcc328")
#: Field 1 claims 16 bytes and has 3: no message of any type decodes from it.
TRUNCATED = bytes.fromhex("0a10616263")
METHODS = [
    (f"/{service.full_name}/{method.name}", method.server_streaming)
    for module in (queue_rpc, events_rpc, scheduler_rpc, executor_rpc)
    for service in module.DESCRIPTOR.services_by_name.values()
    for method in service.methods
]


@pytest.fixture(scope="module")
async def address(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    core = CoreSettings(data_dir=tmp_path_factory.mktemp("platform"))
    platform = Platform(core, ["queue", "events", "scheduler", "executor"])
    port = await platform.start("127.0.0.1:0")
    yield f"127.0.0.1:{port}"
    await platform.stop(grace=0)


async def _call(address: str, method: str, streaming: bool, data: bytes) -> grpc.aio.AioRpcError:
    async with grpc.aio.insecure_channel(address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            if streaming:
                call = channel.unary_stream(method)(data, timeout=10)
                async for _ in call:
                    pass
            else:
                await channel.unary_unary(method)(data, timeout=10)
    return info.value


def test_every_service_is_covered() -> None:
    services = {method.split("/")[1] for method, _ in METHODS}
    assert len(services) >= 5 and len(METHODS) > 40


@pytest.mark.parametrize(("method", "streaming"), METHODS, ids=[m for m, _ in METHODS])
async def test_undecodable_bytes_are_invalid_argument(
    address: str, method: str, streaming: bool, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        error = await _call(address, method, streaming, TRUNCATED)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
    assert [f for f, _ in rich_error_details(error).field_violations] == ["request"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_invalid_utf8_in_a_submit_is_invalid_argument(
    address: str, caplog: pytest.LogCaptureFixture
) -> None:
    method = "/conveyor.queue.v1.WorkOrderQueueService/SubmitWorkOrder"
    with caplog.at_level(logging.INFO):
        error = await _call(address, method, False, INVALID_UTF8)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "do not decode" in (error.details() or "")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
