"""What Prometheus scrapes from a real `conveyor serve` process: RED metrics per RPC."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conveyor.queue.v1 import service_pb2 as rpc
from conveyor.queue.v1 import service_pb2_grpc
from conveyor_queue.api.servicer import SERVICE_NAME as QUEUE_SERVICE
from tests.helpers.platform_processes import PlatformProcesses, base_environment


def samples(text: str, name: str) -> dict[frozenset[tuple[str, str]], float]:
    """Every sample called `name`, by its labels."""
    return {
        frozenset(sample.labels.items()): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


def value(text: str, name: str, **labels: str) -> float:
    return sum(
        found for key, found in samples(text, name).items() if set(labels.items()) <= set(key)
    )


@pytest.fixture
async def queue_process(tmp_path: Path) -> AsyncIterator[PlatformProcesses]:
    platform = await PlatformProcesses.start(
        base_environment(CONVEYOR_DATA_DIR=str(tmp_path)), names=("queue",)
    )
    yield platform
    await platform.stop()


async def test_a_real_server_exports_requests_errors_and_durations(
    queue_process: PlatformProcesses,
) -> None:
    async with grpc.aio.insecure_channel(queue_process.address("queue")) as channel:
        queue = service_pb2_grpc.WorkOrderQueueServiceStub(channel)
        for _ in range(2):
            await queue.SubmitWorkOrder(
                rpc.SubmitWorkOrderRequest(parent="namespaces/red/queues/jobs")
            )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await queue.SubmitWorkOrder(rpc.SubmitWorkOrderRequest(parent="not a queue"))
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT

    text = await asyncio.to_thread(queue_process.scrape, "queue")
    submit = {"service": QUEUE_SERVICE, "method": "SubmitWorkOrder"}
    assert value(text, "conveyor_rpc_server_requests_total", **submit, code="OK") == 2
    assert value(text, "conveyor_rpc_server_requests_total", **submit, code="INVALID_ARGUMENT") == 1
    assert value(text, "conveyor_rpc_server_errors_total", **submit, code="INVALID_ARGUMENT") == 1
    assert value(text, "conveyor_rpc_server_errors_total", **submit, code="OK") == 0
    assert value(text, "conveyor_rpc_server_duration_seconds_count", **submit) == 3
    buckets = [
        dict(key)["le"]
        for key in samples(text, "conveyor_rpc_server_duration_seconds_bucket")
        if dict(key).get("method") == "SubmitWorkOrder" and dict(key).get("code") == "OK"
    ]
    assert "0.005" in buckets and "+Inf" in buckets  # seconds, not the default ms buckets
    # Labels of the RPC metrics are bounded: no request data, no peer.
    for key in samples(text, "conveyor_rpc_server_requests_total"):
        assert {label for label, _ in key} - {
            "otel_scope_name",
            "otel_scope_version",
            "otel_scope_schema_url",
        } == {
            "service",
            "method",
            "code",
        }
