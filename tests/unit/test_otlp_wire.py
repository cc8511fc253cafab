"""conveyor_core.otlp_wire: the hand-written OTLP encoding is byte for byte the SDK's, and
the exporter built on it delivers spans to a real OTLP/gRPC receiver on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)

from conveyor_core.otlp_wire import WireSpanExporter, encode_request
from tests.helpers.otlp_receiver import OtlpReceiver


@pytest.fixture
def finished() -> Iterator[InMemorySpanExporter]:
    yield InMemorySpanExporter()


def _provider(
    memory: InMemorySpanExporter, service: str, limits: SpanLimits | None = None
) -> TracerProvider:
    provider = TracerProvider(
        resource=Resource.create({"service.name": service, "deployment": "test", "replicas": 3}),
        span_limits=limits,
    )
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return provider


def _remote_parent(is_remote: bool = True) -> SpanContext:
    return SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0xB7AD6B7169203331,
        is_remote=is_remote,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=TraceState([("vendor", "value"), ("other", "x")]),
    )


def _every_shape(memory: InMemorySpanExporter) -> Sequence[ReadableSpan]:
    """Spans of two resources and three scopes, with every kind, status, attribute
    type, events, links, a remote parent with trace state, and dropped counts."""
    queue = _provider(memory, "queue")
    executor = _provider(
        memory, "executor", SpanLimits(max_attributes=2, max_events=1, max_links=1)
    )
    plain = queue.get_tracer("conveyor.queue")
    versioned = queue.get_tracer("conveyor.sdk", "1.2.3", schema_url="https://schema/1.0")
    limited = executor.get_tracer("conveyor.executor")
    attributes = {
        "conveyor.work_order_id": "wo-3f1c",
        "empty": "",
        "unicode": "déjà vu ✓",
        "flag": True,
        "off": False,
        "zero": 0,
        "count": 300,
        "negative": -7,
        "largest": 2**63 - 1,
        "smallest": -(2**63),
        "ratio": 0.25,
        "names": ["a", "b", ""],
        "numbers": [1, -2, 3],
        "flags": [True, False],
        "ratios": [1.5, -0.0],
        "long": "x" * 300,
    }
    for kind in SpanKind:
        with plain.start_as_current_span(f"kind.{kind.name}", kind=kind, attributes=attributes):
            pass
    with plain.start_as_current_span("parent") as parent:
        parent.add_event("started", {"n": 1})
        parent.add_event("")
        with plain.start_as_current_span("child") as child:
            child.set_status(Status(StatusCode.ERROR, "boom: ünïcode"))
        with versioned.start_as_current_span("ok") as ok:
            ok.set_status(Status(StatusCode.OK))
    remote = set_span_in_context(NonRecordingSpan(_remote_parent()))
    local_link = Link(_remote_parent(is_remote=False), {"why": "batch"})
    with plain.start_as_current_span(
        "", context=remote, links=[Link(_remote_parent()), local_link]
    ):
        pass
    with limited.start_as_current_span(
        "limited", attributes={"a": 1, "b": 2, "c": 3}, links=[Link(_remote_parent())] * 3
    ) as span:
        for n in range(3):
            span.add_event(f"event {n}", {"n": n})
    return memory.get_finished_spans()


def test_every_shape_of_span_encodes_to_the_sdk_encoders_bytes(
    finished: InMemorySpanExporter,
) -> None:
    spans = _every_shape(finished)
    expected = encode_spans(spans).SerializeToString()
    assert encode_request(spans) == expected
    decoded = ExportTraceServiceRequest.FromString(encode_request(spans))
    assert [len(r.scope_spans) for r in decoded.resource_spans] == [2, 1]
    assert sum(len(s.spans) for r in decoded.resource_spans for s in r.scope_spans) == len(spans)
    # Encoded twice (the caches filled): still the same bytes; and batch by batch.
    assert encode_request(spans) == expected
    for one in spans:
        assert encode_request([one]) == encode_spans([one]).SerializeToString()
    assert encode_request([]) == encode_spans([]).SerializeToString() == b""


def test_values_outside_the_sdks_attribute_checks_encode_as_the_sdk_does(
    finished: InMemorySpanExporter,
) -> None:
    """ReadableSpan takes attributes as given (instrumentation can build one directly):
    bytes, None, nested lists and mappings are encoded, and an int beyond int64 is left
    out with the rest kept, as the SDK's encoder does."""
    scope = InstrumentationScope("direct", "0.1", attributes={"scope.attr": "s"})
    span = ReadableSpan(
        name="direct",
        context=_remote_parent(is_remote=False),
        parent=None,
        resource=Resource.create({"service.name": "direct"}),
        attributes={
            "raw": b"\x00\xff",
            "nothing": None,
            "nested": [[1, 2], ["a"]],
            "mapping": {"k": "v", "n": 2, "inner": {"deep": True}},
            "too_big": 2**64,
            "kept": "yes",
        },
        events=[Event("e", {"raw": b"x"}, timestamp=0)],
        start_time=1,
        end_time=2,
        instrumentation_scope=scope,
        status=Status(StatusCode.UNSET),
    )
    expected = encode_spans([span]).SerializeToString()
    assert encode_request([span]) == expected
    decoded = ExportTraceServiceRequest.FromString(expected).resource_spans[0]
    keys = [a.key for a in decoded.scope_spans[0].spans[0].attributes]
    assert "too_big" not in keys and "kept" in keys


def test_the_exporter_delivers_spans_to_a_real_receiver(finished: InMemorySpanExporter) -> None:
    spans = _every_shape(finished)

    async def scenario() -> list[str]:
        async with OtlpReceiver() as receiver:
            exporter = WireSpanExporter(endpoint=receiver.endpoint, insecure=True, timeout=10)
            assert exporter.encodes_on_the_wire  # the SDK still calls the stub hook
            try:
                result = await asyncio.to_thread(exporter.export, spans)
            finally:
                exporter.shutdown()
            assert result is SpanExportResult.SUCCESS
            return sorted(f"{s.service}/{s.name}/{s.span_id}" for s in receiver.spans)

    received = asyncio.run(scenario())
    assert received == sorted(
        f"{s.resource.attributes['service.name']}/{s.name}/{s.context.span_id:016x}" for s in spans
    )
