"""RED metrics of every RPC (conveyor_core.grpc.metrics), recorded by the server bootstrap."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from conveyor_core.errors import FieldViolation, InvalidArgument
from conveyor_core.grpc import ServiceRegistration, create_channel, create_server
from conveyor_core.settings import CoreSettings
from tests.helpers.e2e import eventually
from tests.helpers.metrics import metric_value

SERVICE = "conveyor.test.v1.RedProbe"


class Probe:
    async def ok(self, request: bytes, context: Any) -> bytes:
        return request

    async def bad(self, request: bytes, context: Any) -> bytes:
        raise InvalidArgument(FieldViolation("name", "must not be empty"))

    async def crash(self, request: bytes, context: Any) -> bytes:
        raise RuntimeError("a bug")

    async def slow(self, request: bytes, context: Any) -> bytes:
        await asyncio.Event().wait()  # until the deadline cancels it
        return b""

    def registration(self) -> ServiceRegistration:
        unary = grpc.unary_unary_rpc_method_handler
        handlers = {
            "Ok": unary(self.ok),
            "Bad": unary(self.bad),
            "Crash": unary(self.crash),
            "Slow": unary(self.slow),
        }
        generic = grpc.method_handlers_generic_handler(SERVICE, handlers)
        return ServiceRegistration(
            SERVICE, lambda server: server.add_generic_rpc_handlers([generic])
        )


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    server, port = await create_server("127.0.0.1:0", [Probe().registration()], CoreSettings())
    await server.start()
    channel = create_channel(f"127.0.0.1:{port}")
    try:
        yield channel
    finally:
        await channel.close()
        await server.stop(grace=0)


def labels(method: str, code: str) -> dict[str, str]:
    return {"service": SERVICE, "method": method, "code": code}


async def test_requests_errors_and_durations_are_recorded_per_method_and_code(
    metric_reader: InMemoryMetricReader, channel: grpc.aio.Channel
) -> None:
    def value(metric: str, method: str, code: str) -> float:
        return metric_value(metric_reader, f"conveyor.rpc.server.{metric}", labels(method, code))

    before = {
        (metric, method, code): value(metric, method, code)
        for metric in ("requests", "errors")
        for method, code in (
            ("Ok", "OK"),
            ("Bad", "INVALID_ARGUMENT"),
            ("Crash", "INTERNAL"),
            ("Slow", "DEADLINE_EXCEEDED"),
        )
    }
    durations_before = histogram_count(metric_reader, labels("Ok", "OK"))

    for _ in range(3):
        await channel.unary_unary(f"/{SERVICE}/Ok")(b"x")
    for method, expected in (("Bad", "INVALID_ARGUMENT"), ("Crash", "INTERNAL")):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await channel.unary_unary(f"/{SERVICE}/{method}")(b"x")
        assert raised.value.code().name == expected
    with pytest.raises(grpc.aio.AioRpcError):
        await channel.unary_unary(f"/{SERVICE}/Slow")(b"x", timeout=0.2)

    def grew(metric: str, method: str, code: str) -> float:
        return value(metric, method, code) - before[(metric, method, code)]

    assert grew("requests", "Ok", "OK") == 3
    assert grew("errors", "Ok", "OK") == 0
    assert grew("requests", "Bad", "INVALID_ARGUMENT") == 1
    assert grew("errors", "Bad", "INVALID_ARGUMENT") == 1
    assert grew("errors", "Crash", "INTERNAL") == 1

    async def deadline_recorded() -> bool:  # the server sees the cancellation a bit later
        return grew("errors", "Slow", "DEADLINE_EXCEEDED") == 1

    await eventually(deadline_recorded, "the expired call counted as DEADLINE_EXCEEDED", 10)
    assert histogram_count(metric_reader, labels("Ok", "OK")) - durations_before == 3


async def test_health_checks_are_measured_and_labels_hold_no_request_data(
    metric_reader: InMemoryMetricReader, channel: grpc.aio.Channel
) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    await health.Check(health_pb2.HealthCheckRequest(service=""))
    assert metric_value(
        metric_reader,
        "conveyor.rpc.server.requests",
        {"service": "grpc.health.v1.Health", "method": "Check", "code": "OK"},
    )
    keys = {
        key
        for point in points(metric_reader, "conveyor.rpc.server.requests")
        for key in point.attributes
    }
    assert keys == {"service", "method", "code"}


def points(reader: InMemoryMetricReader, name: str) -> list[Any]:
    data = reader.get_metrics_data()
    found: list[Any] = []
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    found.extend(metric.data.data_points)
    return found


def histogram_count(reader: InMemoryMetricReader, attributes: dict[str, str]) -> int:
    return sum(
        point.count
        for point in points(reader, "conveyor.rpc.server.duration")
        if all(point.attributes.get(k) == v for k, v in attributes.items())
    )
