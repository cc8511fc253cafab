"""A real in-process gRPC server built by `create_server`, called through `create_channel`.

The service under test is a tiny generic one with bytes messages (no protos
needed): each method exercises one path of the interceptors.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from conveyor_core import logscrub
from conveyor_core.context import (
    CORRELATION_METADATA_KEY,
    correlation_scope,
    get_correlation_id,
)
from conveyor_core.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PreconditionViolation,
)
from conveyor_core.grpc import (
    ERROR_DOMAIN,
    GrpcServer,
    ServiceRegistration,
    create_channel,
    create_server,
    rich_error_details,
)
from conveyor_core.logscrub import register_secret
from conveyor_core.settings import CoreSettings
from conveyor_core.telemetry import configure_logging
from tests.helpers.polling import eventually

SERVICE = "conveyor.test.v1.ProbeService"
SECRET = "hunter2-database-password"
BEARER = "cvy_0123456789abcdef0123456789"
RESOLVED = "resolved-endpoint-api-key-42"


@dataclass
class ProbeServicer:
    """Handlers of every shape; records the correlation id each call saw."""

    seen_correlation_ids: list[str | None] = field(default_factory=list)
    slow_entered: asyncio.Event = field(default_factory=asyncio.Event)
    slow_release: asyncio.Event = field(default_factory=asyncio.Event)
    forever_closed: asyncio.Event = field(default_factory=asyncio.Event)

    async def echo(self, request: bytes, context: Any) -> bytes:
        self.seen_correlation_ids.append(get_correlation_id())
        return request

    async def bad_arguments(self, request: bytes, context: Any) -> bytes:
        raise InvalidArgument(
            [
                FieldViolation("work_order.priority", "must be between 0 and 9"),
                FieldViolation("work_order.queue", "must not be empty"),
            ]
        )

    async def precondition(self, request: bytes, context: Any) -> bytes:
        raise FailedPrecondition(
            PreconditionViolation("LEASE", "work_orders/wo-1", "lease expired")
        )

    async def missing(self, request: bytes, context: Any) -> bytes:
        raise NotFound("work_order", "wo-404")

    async def crash(self, request: bytes, context: Any) -> bytes:
        raise ValueError(
            f"could not connect to postgresql+asyncpg://app:{SECRET}@db:5432/conveyor "
            f"(Authorization: Bearer {BEARER}, api secret {RESOLVED})"
        )

    async def countdown(self, request: bytes, context: Any) -> AsyncIterator[bytes]:
        yield b"2"
        yield b"1"
        raise FailedPrecondition(message="ran out of numbers")

    async def forever(self, request: bytes, context: Any) -> AsyncIterator[bytes]:
        try:
            yield b"tick"
            await asyncio.Event().wait()  # until the client cancels
        finally:
            self.forever_closed.set()

    async def concatenate(self, requests: AsyncIterator[bytes], context: Any) -> bytes:
        self.seen_correlation_ids.append(get_correlation_id())
        return b"".join([request async for request in requests])

    async def chat(self, requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        self.seen_correlation_ids.append(get_correlation_id())
        async for request in requests:
            if request == b"bad":
                raise InvalidArgument(FieldViolation("message", "is bad"))
            yield request.upper()

    async def slow(self, request: bytes, context: Any) -> bytes:
        self.slow_entered.set()
        await self.slow_release.wait()
        return b"finished"

    def registration(self) -> ServiceRegistration:
        unary = grpc.unary_unary_rpc_method_handler
        handlers = {
            "Echo": unary(self.echo),
            "BadArguments": unary(self.bad_arguments),
            "Precondition": unary(self.precondition),
            "Missing": unary(self.missing),
            "Crash": unary(self.crash),
            "Slow": unary(self.slow),
            "Countdown": grpc.unary_stream_rpc_method_handler(self.countdown),
            "Forever": grpc.unary_stream_rpc_method_handler(self.forever),
            "Concatenate": grpc.stream_unary_rpc_method_handler(self.concatenate),
            "Chat": grpc.stream_stream_rpc_method_handler(self.chat),
        }
        generic = grpc.method_handlers_generic_handler(SERVICE, handlers)
        return ServiceRegistration(
            SERVICE, lambda server: server.add_generic_rpc_handlers([generic])
        )


@dataclass
class Harness:
    server: GrpcServer
    port: int
    channel: grpc.aio.Channel
    probe: ProbeServicer

    def unary(self, method: str) -> Any:
        return self.channel.unary_unary(f"/{SERVICE}/{method}")

    def health(self) -> health_pb2_grpc.HealthStub:
        return health_pb2_grpc.HealthStub(self.channel)


async def rejects_new_calls(harness: Harness) -> bool:
    try:
        await harness.unary("Missing")(b"probe", timeout=1)
    except grpc.aio.AioRpcError as error:
        return error.code() is grpc.StatusCode.UNAVAILABLE
    return False


async def health_status(harness: Harness, service: str) -> int:
    response = await harness.health().Check(health_pb2.HealthCheckRequest(service=service))
    return response.status


async def in_fresh_context(awaitable: Callable[[], Awaitable[Any]]) -> Any:
    """Run a coroutine in a task whose context has no correlation id set."""
    return await asyncio.create_task(awaitable(), context=contextvars.Context())


@pytest.fixture
def settings() -> CoreSettings:
    return CoreSettings(shutdown_grace_seconds=5.0)


@pytest.fixture
async def harness(settings: CoreSettings) -> AsyncIterator[Harness]:
    probe = ProbeServicer()
    server, port = await create_server("127.0.0.1:0", [probe.registration()], settings)
    await server.start()
    channel = create_channel(
        f"127.0.0.1:{port}", settings=settings, idempotent_methods=[f"{SERVICE}/Echo"]
    )
    try:
        yield Harness(server, port, channel, probe)
    finally:
        await channel.close()
        probe.slow_release.set()
        await server.stop(grace=0)


# Correlation id


async def test_correlation_id_sent_by_client_reaches_handler_and_is_not_echoed(
    harness: Harness,
) -> None:
    with correlation_scope("caller-chosen-id"):
        call = harness.unary("Echo")(b"hello")
        assert await call == b"hello"
        initial_metadata = await call.initial_metadata()

    # The caller knows its own id: sending it back would cost every call a send.
    assert CORRELATION_METADATA_KEY not in initial_metadata
    assert harness.probe.seen_correlation_ids == ["caller-chosen-id"]


async def test_error_names_the_callers_correlation_id(harness: Harness) -> None:
    with correlation_scope("caller-of-missing"):
        error = await rpc_error(harness.unary("Missing")(b""))

    assert rich_error_details(error).correlation_id == "caller-of-missing"


async def test_server_generates_correlation_id_when_absent(harness: Harness) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{harness.port}") as plain_channel:
        call = plain_channel.unary_unary(f"/{SERVICE}/Echo")(b"hello")
        await call
        returned = (await call.initial_metadata())[CORRELATION_METADATA_KEY]

    assert len(returned) == 32
    assert harness.probe.seen_correlation_ids == [returned]


async def test_server_replaces_malformed_correlation_id(harness: Harness) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{harness.port}") as plain_channel:
        call = plain_channel.unary_unary(f"/{SERVICE}/Echo")(
            b"hello", metadata=((CORRELATION_METADATA_KEY, "spaces are not allowed " + "x" * 200),)
        )
        await call
        returned = (await call.initial_metadata())[CORRELATION_METADATA_KEY]

    assert len(returned) == 32
    assert harness.probe.seen_correlation_ids == [returned]


async def test_client_sets_new_correlation_id_in_callers_context(harness: Harness) -> None:
    async def call_then_read_id() -> str | None:
        assert get_correlation_id() is None
        await harness.unary("Echo")(b"hello")
        return get_correlation_id()

    caller_id = await in_fresh_context(call_then_read_id)

    assert caller_id is not None
    assert harness.probe.seen_correlation_ids == [caller_id]


# Error mapping


async def rpc_error(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    return raised.value


async def test_invalid_argument_carries_field_violations(harness: Harness) -> None:
    error = rich_error_details(await rpc_error(harness.unary("BadArguments")(b"")))

    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert error.field_violations == (
        ("work_order.priority", "must be between 0 and 9"),
        ("work_order.queue", "must not be empty"),
    )
    assert error.message == (
        "work_order.priority: must be between 0 and 9; work_order.queue: must not be empty"
    )
    assert (error.reason, error.domain) == ("INVALID_ARGUMENT", ERROR_DOMAIN)


async def test_failed_precondition_carries_violations(harness: Harness) -> None:
    error = rich_error_details(await rpc_error(harness.unary("Precondition")(b"")))

    assert error.code is grpc.StatusCode.FAILED_PRECONDITION
    assert error.precondition_violations == (("LEASE", "work_orders/wo-1", "lease expired"),)
    assert error.reason == "FAILED_PRECONDITION"


async def test_not_found_carries_resource_info(harness: Harness) -> None:
    error = rich_error_details(await rpc_error(harness.unary("Missing")(b"")))

    assert error.code is grpc.StatusCode.NOT_FOUND
    assert (error.resource_type, error.resource_name) == ("work_order", "wo-404")
    assert error.message == "work_order 'wo-404' not found"
    assert error.reason == "NOT_FOUND"


@pytest.fixture
def production_logging() -> Iterator[None]:
    """The process's logging as `conveyor serve` sets it up (scrubbing included), undone after."""
    root = logging.getLogger()
    level = root.level
    handler = configure_logging(CoreSettings())
    register_secret(RESOLVED)  # as the executor does for each secret it resolves
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        logscrub.uninstall()


async def test_unexpected_error_is_masked_for_caller_and_logged_without_secrets(
    harness: Harness, caplog: pytest.LogCaptureFixture, production_logging: None
) -> None:
    with caplog.at_level(logging.ERROR), correlation_scope("crash-correlation-id"):
        raw_error = await rpc_error(harness.unary("Crash")(b""))
    error = rich_error_details(raw_error)

    assert error.code is grpc.StatusCode.INTERNAL
    assert error.message == "internal error (correlation id crash-correlation-id)"
    assert SECRET not in str(raw_error)
    assert (error.reason, error.correlation_id) == ("INTERNAL", "crash-correlation-id")
    [record] = [r for r in caplog.records if r.name == "conveyor_core.grpc.interceptors"]
    assert "crash-correlation-id" in record.getMessage()
    # The traceback is kept, scrubbed; the live exception (and its message) is not.
    assert record.exc_info is None and record.exc_text
    assert "ValueError: could not connect to postgresql+asyncpg://app:***@db" in record.exc_text
    assert "Bearer ***" in record.exc_text and "api secret ***" in record.exc_text
    for secret in (SECRET, BEARER, RESOLVED):
        assert secret not in record.exc_text and secret not in caplog.text


async def test_error_raised_mid_stream_arrives_after_the_responses(harness: Harness) -> None:
    call = harness.channel.unary_stream(f"/{SERVICE}/Countdown")(b"")
    received = []
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for response in call:
            received.append(response)

    assert received == [b"2", b"1"]
    error = rich_error_details(raised.value)
    assert (error.code, error.message) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "ran out of numbers",
    )
    assert error.reason == "FAILED_PRECONDITION"


async def test_stream_unary_call_carries_correlation_id(harness: Harness) -> None:
    async def requests() -> AsyncIterator[bytes]:
        for part in (b"con", b"vey", b"or"):
            yield part

    with correlation_scope("stream-unary-id"):
        call = harness.channel.stream_unary(f"/{SERVICE}/Concatenate")(requests())
        assert await call == b"conveyor"
    assert harness.probe.seen_correlation_ids == ["stream-unary-id"]


async def test_stream_stream_call_carries_correlation_id_and_its_error(harness: Harness) -> None:
    with correlation_scope("stream-stream-id"):
        call = harness.channel.stream_stream(f"/{SERVICE}/Chat")()
    await call.write(b"hi")
    assert await call.read() == b"HI"
    assert harness.probe.seen_correlation_ids == ["stream-stream-id"]
    await call.write(b"bad")

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call.read()
    assert rich_error_details(raised.value).field_violations == (("message", "is bad"),)


# Tracing


def spans_named(exporter: InMemorySpanExporter, method: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == f"{SERVICE}/{method}"]


def client_and_server_span(
    exporter: InMemorySpanExporter, method: str, correlation_id: str
) -> tuple[ReadableSpan, ReadableSpan] | None:
    mine = [
        span
        for span in spans_named(exporter, method)
        if (span.attributes or {}).get("conveyor.correlation_id") == correlation_id
    ]
    clients = [span for span in mine if span.kind is SpanKind.CLIENT]
    servers = [span for span in mine if span.kind is SpanKind.SERVER]
    if len(clients) == 1 and len(servers) == 1:
        return clients[0], servers[0]
    return None


async def test_server_span_is_child_of_client_span(
    harness: Harness, spans: InMemorySpanExporter
) -> None:
    with correlation_scope("traced-call"):
        await harness.unary("Echo")(b"hello")

    client, server = await eventually(lambda: client_and_server_span(spans, "Echo", "traced-call"))
    assert client.context is not None and server.context is not None
    assert server.context.trace_id == client.context.trace_id
    assert server.parent is not None and server.parent.span_id == client.context.span_id
    assert server.attributes is not None
    assert server.attributes["rpc.system"] == "grpc"
    assert server.attributes["rpc.service"] == SERVICE
    assert server.attributes["rpc.method"] == "Echo"
    assert server.attributes["rpc.grpc.status_code"] == grpc.StatusCode.OK.value[0]
    assert client.status.status_code is StatusCode.UNSET


async def test_spans_record_status_codes(harness: Harness, spans: InMemorySpanExporter) -> None:
    with correlation_scope("traced-crash"):
        await rpc_error(harness.unary("Crash")(b""))
    with correlation_scope("traced-bad-arguments"):
        await rpc_error(harness.unary("BadArguments")(b""))

    client, server = await eventually(
        lambda: client_and_server_span(spans, "Crash", "traced-crash")
    )
    assert server.attributes is not None
    assert server.attributes["rpc.grpc.status_code"] == grpc.StatusCode.INTERNAL.value[0]
    assert server.status.status_code is StatusCode.ERROR
    assert [event.name for event in server.events] == ["exception"]
    assert client.status.status_code is StatusCode.ERROR

    client, server = await eventually(
        lambda: client_and_server_span(spans, "BadArguments", "traced-bad-arguments")
    )
    assert server.attributes is not None
    assert server.attributes["rpc.grpc.status_code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert server.status.status_code is StatusCode.UNSET  # the caller's fault, not the server's
    assert client.status.status_code is StatusCode.ERROR


async def test_streaming_call_spans_end_with_the_stream(
    harness: Harness, spans: InMemorySpanExporter
) -> None:
    with correlation_scope("traced-stream"):
        call = harness.channel.unary_stream(f"/{SERVICE}/Countdown")(b"")
        await rpc_error(_drain(call))

    client, server = await eventually(
        lambda: client_and_server_span(spans, "Countdown", "traced-stream")
    )
    assert server.parent is not None and client.context is not None
    assert server.parent.span_id == client.context.span_id
    code = grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert client.attributes is not None and server.attributes is not None
    assert client.attributes["rpc.grpc.status_code"] == server.attributes["rpc.grpc.status_code"]
    assert server.attributes["rpc.grpc.status_code"] == code


async def test_client_cancelling_a_stream_ends_the_handler_cleanly(
    harness: Harness, spans: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING), correlation_scope("cancelled-stream"):
        call = harness.channel.unary_stream(f"/{SERVICE}/Forever")(b"")
        assert await call.read() == b"tick"
        call.cancel()
        await asyncio.wait_for(harness.probe.forever_closed.wait(), timeout=5)

        client, server = await eventually(
            lambda: client_and_server_span(spans, "Forever", "cancelled-stream")
        )
    assert server.attributes is not None and client.attributes is not None
    assert server.attributes["rpc.grpc.status_code"] == grpc.StatusCode.CANCELLED.value[0]
    assert client.attributes["rpc.grpc.status_code"] == grpc.StatusCode.CANCELLED.value[0]
    # The handler was closed inside its own call, so no scope failed to unwind.
    assert [record.getMessage() for record in caplog.records] == []


async def test_deadline_is_recorded_on_both_spans(
    harness: Harness, spans: InMemorySpanExporter
) -> None:
    with correlation_scope("traced-deadline"):
        error = await rpc_error(harness.unary("Slow")(b"", timeout=0.2))

    assert error.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    client, server = await eventually(
        lambda: client_and_server_span(spans, "Slow", "traced-deadline")
    )
    deadline_exceeded = grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
    assert client.attributes is not None and server.attributes is not None
    assert client.attributes["rpc.grpc.status_code"] == deadline_exceeded
    assert server.attributes["rpc.grpc.status_code"] == deadline_exceeded
    assert server.status.status_code is StatusCode.ERROR


async def _drain(call: AsyncIterator[Any]) -> None:
    async for _ in call:
        pass


# Health and reflection


async def test_health_reports_liveness_at_once_and_readiness_when_told(harness: Harness) -> None:
    serving, not_serving = (
        health_pb2.HealthCheckResponse.SERVING,
        health_pb2.HealthCheckResponse.NOT_SERVING,
    )
    assert await health_status(harness, "") == serving
    assert await health_status(harness, SERVICE) == not_serving

    await harness.server.set_serving(SERVICE, True)
    assert await health_status(harness, SERVICE) == serving

    await harness.server.set_serving(SERVICE, False)
    assert await health_status(harness, SERVICE) == not_serving


async def test_set_serving_rejects_unknown_service(harness: Harness) -> None:
    with pytest.raises(ValueError, match="not served here"):
        await harness.server.set_serving("conveyor.nope.v1.Nope", True)


async def test_reflection_lists_the_services(harness: Harness) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(harness.channel)
    call = stub.ServerReflectionInfo()
    await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    response = await call.read()
    await call.done_writing()

    names = {service.name for service in response.list_services_response.service}
    assert names == {
        SERVICE,
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }


# Lifecycle


async def test_stop_turns_health_not_serving_and_is_idempotent(harness: Harness) -> None:
    await harness.server.set_serving(SERVICE, True)
    watch = harness.health().Watch(health_pb2.HealthCheckRequest(service=""))
    assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING

    stopping = asyncio.create_task(harness.server.stop(grace=5))
    assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
    watch.cancel()  # the watch would otherwise hold the server for the whole grace
    await stopping

    await harness.server.stop()
    await asyncio.wait_for(harness.server.wait_for_termination(), timeout=1)
    assert await rejects_new_calls(harness)


async def test_graceful_stop_lets_in_flight_call_finish(harness: Harness) -> None:
    in_flight = asyncio.ensure_future(harness.unary("Slow")(b""))
    await asyncio.wait_for(harness.probe.slow_entered.wait(), timeout=5)

    stopping = asyncio.create_task(harness.server.stop(grace=5))
    await eventually(lambda: rejects_new_calls(harness))
    assert not stopping.done()
    harness.probe.slow_release.set()

    assert await asyncio.wait_for(in_flight, timeout=5) == b"finished"
    await asyncio.wait_for(stopping, timeout=5)


async def test_stop_before_start_and_no_restart(settings: CoreSettings) -> None:
    server, port = await create_server("127.0.0.1:0", [ProbeServicer().registration()], settings)
    assert port > 0

    await server.stop()
    await server.stop()

    with pytest.raises(RuntimeError, match="cannot start again"):
        await server.start()


async def test_start_is_idempotent(settings: CoreSettings) -> None:
    server, port = await create_server("127.0.0.1:0", [ProbeServicer().registration()], settings)
    await asyncio.gather(server.start(), server.start())
    await server.start()
    async with create_channel(f"127.0.0.1:{port}") as channel:
        assert await channel.unary_unary(f"/{SERVICE}/Echo")(b"x") == b"x"
    await server.stop(grace=0)


async def test_duplicate_registrations_are_rejected(settings: CoreSettings) -> None:
    registration = ProbeServicer().registration()
    with pytest.raises(ValueError, match="duplicate"):
        await create_server("127.0.0.1:0", [registration, registration], settings)


async def test_sigterm_stops_the_server_gracefully(harness: Harness) -> None:
    loop = asyncio.get_running_loop()
    harness.server.install_signal_handlers(loop)
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(harness.server.wait_for_termination(), timeout=5)
    finally:
        harness.server.remove_signal_handlers()
    # The handlers uninstalled themselves: SIGTERM is back to its default.
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


# A process that never configured tracing (the usual case without a collector):
# this test process installs a tracer provider, so the check runs in a fresh one.
_UNTRACED_SERVER = """
import asyncio, grpc
from opentelemetry import trace
from opentelemetry.propagate import inject
from conveyor_core.grpc import ServiceRegistration, create_server
from conveyor_core.settings import CoreSettings

async def traceparent(request, context):
    carrier = {}
    inject(carrier)  # what a handler stores or sends on: the caller's trace
    span = trace.get_current_span()
    return f"{carrier.get('traceparent', '')} {span.is_recording()}".encode()

async def main():
    handlers = {"Traceparent": grpc.unary_unary_rpc_method_handler(traceparent)}
    generic = grpc.method_handlers_generic_handler("conveyor.test.v1.Untraced", handlers)
    registration = ServiceRegistration(
        "conveyor.test.v1.Untraced", lambda server: server.add_generic_rpc_handlers([generic])
    )
    server, port = await create_server("127.0.0.1:0", [registration], CoreSettings())
    await server.start()
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary("/conveyor.test.v1.Untraced/Traceparent")
        print((await call(b"", metadata=(("traceparent", parent),))).decode())
        print((await call(b"")).decode())
    await server.stop(0)
    print(type(trace.get_tracer_provider()).__name__)

asyncio.run(main())
"""


async def test_without_tracer_provider_the_callers_trace_context_still_propagates() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _UNTRACED_SERVER,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    with_parent, without_parent, provider = out.decode().splitlines()
    assert provider == "ProxyTracerProvider"
    assert with_parent == "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01 False"
    assert without_parent == " False"
