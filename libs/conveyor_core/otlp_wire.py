"""OTLP trace export requests encoded straight to protobuf wire bytes, and the exporter
that sends them.

The SDK's encoder (`opentelemetry.exporter.otlp.proto.common.trace_encoder.encode_spans`)
builds a protobuf message object per span, attribute and value in Python and then
serializes the tree: with tracing exported it was 28 % of a platform process's samples
in the SDK bench (docs/benchmarks.md, "Tracing export"). `encode_request` writes the
same bytes directly (about 4 times faster per span), and `WireSpanExporter` sends them
as they are.

The output is byte for byte what `encode_spans(spans).SerializeToString()` gives:
fields in field-number order, the same defaults left out, the same flags
(`SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK`, plus `..._IS_REMOTE_MASK` for a remote parent or
link), the status always present; tests/unit/test_otlp_encode.py compares the two on
every kind of span, attribute value, event and link. Resources and instrumentation
scopes are few and long-lived: they are encoded once with the SDK's own functions
and their bytes cached.

Wire format reference: https://protobuf.dev/programming-guides/encoding/ and
opentelemetry/proto/trace/v1/trace.proto (field numbers in the comments below).
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import grpc
from opentelemetry.exporter.otlp.proto.common._internal import (
    _encode_instrumentation_scope,
    _encode_resource,
)
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

logger = logging.getLogger(__name__)
_fixed64 = struct.Struct("<Q").pack
_double = struct.Struct("<d").pack
_fixed32 = struct.Struct("<I").pack
_ONE_BYTE = [bytes((n,)) for n in range(128)]
#: Span.flags / Link.flags: the parent's (or link's) remoteness is known; and it is remote.
_LOCAL_FLAGS = _fixed32(0x100)
_REMOTE_FLAGS = _fixed32(0x300)
#: Caches of encoded attribute keys, resources and scopes; bounded so that a process
#: that makes up keys cannot grow them without end (past the bound: encoded each time).
CACHE_LIMIT = 4096

_keys: dict[str, bytes] = {}
_resources: dict[Resource, bytes] = {}
_scopes: dict[InstrumentationScope | None, tuple[bytes, bytes]] = {}


def _varint(number: int) -> bytes:
    if number < 0x80:
        return _ONE_BYTE[number]
    out = bytearray()
    while number >= 0x80:
        out.append((number & 0x7F) | 0x80)
        number >>= 7
    out.append(number)
    return bytes(out)


def _field(tag: bytes, body: bytes) -> bytes:
    """A length-delimited field: its tag byte(s), the body's length, the body."""
    size = len(body)
    return tag + (_ONE_BYTE[size] if size < 0x80 else _varint(size)) + body


def _string(tag: bytes, text: str | None) -> bytes:
    """A string field outside a oneof: left out when empty, as proto3 does."""
    return _field(tag, text.encode()) if text else b""


def _time(tag: bytes, nanos: int | None) -> bytes:
    """A fixed64 timestamp field: left out when zero."""
    return tag + _fixed64(nanos) if nanos else b""


def _any_value(value: Any) -> bytes:
    """An AnyValue body: string 1, bool 2, int 3, double 4, array 5, kvlist 6, bytes 7."""
    if isinstance(value, bool):  # before int: bool is an int
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return _field(b"\x0a", value.encode())
    if isinstance(value, int):
        if not -(1 << 63) <= value < (1 << 63):
            raise ValueError(f"{value} is out of an int64's range")
        return b"\x18" + _varint(value if value >= 0 else value + (1 << 64))
    if isinstance(value, float):
        return b"\x21" + _double(value)
    if value is None:
        return b""
    if isinstance(value, bytes):
        return _field(b"\x3a", value)
    if isinstance(value, Sequence):
        return _field(b"\x2a", b"".join(_field(b"\x0a", _any_value(v)) for v in value))
    if isinstance(value, Mapping):
        pairs = b"".join(_field(b"\x0a", _key_value(str(k), v)) for k, v in value.items())
        return _field(b"\x32", pairs)
    raise TypeError(f"cannot encode an attribute value of type {type(value).__name__}")


def _key_value(key: str, value: Any) -> bytes:
    """A KeyValue body: key 1, value 2."""
    encoded_key = _keys.get(key)
    if encoded_key is None:
        encoded_key = _field(b"\x0a", key.encode())
        if len(_keys) < CACHE_LIMIT:
            _keys[key] = encoded_key
    return encoded_key + _field(b"\x12", _any_value(value))


def _attributes(tag: bytes, attributes: Mapping[str, Any] | None) -> bytes:
    if not attributes:
        return b""
    encoded = []
    for key, value in attributes.items():
        try:
            encoded.append(_field(tag, _key_value(key, value)))
        except (TypeError, ValueError):  # left out, as the SDK's encoder does
            logger.exception("Failed to encode key %s", key)
    return b"".join(encoded)


def _span(span: ReadableSpan) -> bytes:
    """A Span body, fields 1 to 16 in order."""
    context = span.get_span_context()
    assert context is not None  # an SDK span always has one
    parent = span.parent
    parts = [
        b"\x0a\x10" + context.trace_id.to_bytes(16, "big"),  # 1 trace_id
        b"\x12\x08" + context.span_id.to_bytes(8, "big"),  # 2 span_id
    ]
    if context.trace_state:  # 3 trace_state
        parts.append(
            _field(b"\x1a", ",".join(f"{k}={v}" for k, v in context.trace_state.items()).encode())
        )
    if parent:  # 4 parent_span_id
        parts.append(b"\x22\x08" + parent.span_id.to_bytes(8, "big"))
    parts.append(_string(b"\x2a", span.name))  # 5 name
    parts.append(b"\x30" + _ONE_BYTE[span.kind.value + 1])  # 6 kind: the API's enum + 1
    parts.append(_time(b"\x39", span.start_time))  # 7 start_time_unix_nano
    parts.append(_time(b"\x41", span.end_time))  # 8 end_time_unix_nano
    parts.append(_attributes(b"\x4a", span.attributes))  # 9 attributes
    if span.dropped_attributes:  # 10
        parts.append(b"\x50" + _varint(span.dropped_attributes))
    for event in span.events:  # 11 events: time 1, name 2, attributes 3, dropped 4
        body = _time(b"\x09", event.timestamp) + _string(b"\x12", event.name)
        body += _attributes(b"\x1a", event.attributes)
        if event.dropped_attributes:
            body += b"\x20" + _varint(event.dropped_attributes)
        parts.append(_field(b"\x5a", body))
    if span.dropped_events:  # 12
        parts.append(b"\x60" + _varint(span.dropped_events))
    for link in span.links:  # 13 links: trace 1, span 2, attributes 4, dropped 5, flags 6
        linked = link.context
        body = b"\x0a\x10" + linked.trace_id.to_bytes(16, "big")
        body += b"\x12\x08" + linked.span_id.to_bytes(8, "big")
        body += _attributes(b"\x22", link.attributes)
        if link.dropped_attributes:
            body += b"\x28" + _varint(link.dropped_attributes)
        body += b"\x35" + (_REMOTE_FLAGS if linked.is_remote else _LOCAL_FLAGS)
        parts.append(_field(b"\x6a", body))
    if span.dropped_links:  # 14
        parts.append(b"\x70" + _varint(span.dropped_links))
    status = span.status  # 15 status: message 2, code 3 (always present, as the SDK's)
    body = _string(b"\x12", status.description)
    if status.status_code.value:
        body += b"\x18" + _ONE_BYTE[status.status_code.value]
    parts.append(_field(b"\x7a", body))
    # 16 flags (fixed32; tag 16 << 3 | 5 is two bytes)
    parts.append(
        b"\x85\x01" + (_REMOTE_FLAGS if parent is not None and parent.is_remote else _LOCAL_FLAGS)
    )
    return b"".join(parts)


def _resource(resource: Resource) -> bytes:
    """ResourceSpans field 1 (resource), encoded once per resource."""
    encoded = _resources.get(resource)
    if encoded is None:
        encoded = _field(b"\x0a", _encode_resource(resource).SerializeToString())
        if len(_resources) < CACHE_LIMIT:
            _resources[resource] = encoded
    return encoded


def _scope(scope: InstrumentationScope | None) -> tuple[bytes, bytes]:
    """ScopeSpans field 1 (scope) and field 3 (schema_url): what goes before and after
    the spans, encoded once per scope."""
    encoded = _scopes.get(scope)
    if encoded is None:
        head = _field(b"\x0a", _encode_instrumentation_scope(scope).SerializeToString())  # type: ignore[arg-type]
        tail = _field(b"\x1a", scope.schema_url.encode()) if scope and scope.schema_url else b""
        encoded = (head, tail)
        if len(_scopes) < CACHE_LIMIT:
            _scopes[scope] = encoded
    return encoded


def encode_request(spans: Sequence[ReadableSpan]) -> bytes:
    """An `ExportTraceServiceRequest` of `spans`, serialized: resource spans 1 >
    scope spans 2 > spans 2, grouped in first-seen order as the SDK's encoder does."""
    grouped: dict[Resource, dict[InstrumentationScope | None, list[bytes]]] = {}
    for span in spans:
        scopes = grouped.setdefault(span.resource, {})
        scopes.setdefault(span.instrumentation_scope or None, []).append(_span(span))
    out = []
    for resource, scopes in grouped.items():
        body = [_resource(resource)]
        for scope, encoded_spans in scopes.items():
            head, tail = _scope(scope)
            inner = head + b"".join(_field(b"\x12", s) for s in encoded_spans) + tail
            body.append(_field(b"\x12", inner))
        if resource.schema_url:
            body.append(_field(b"\x1a", resource.schema_url.encode()))
        out.append(_field(b"\x0a", b"".join(body)))
    return b"".join(out)


#: The collector's trace service method (opentelemetry/proto/collector/trace/v1).
TRACE_EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


class _WireTraceStub:
    """The trace service stub, taking a request already serialized."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.Export: grpc.UnaryUnaryMultiCallable[bytes, ExportTraceServiceResponse] = (
            channel.unary_unary(
                TRACE_EXPORT_METHOD,
                request_serializer=None,  # bytes as they are
                response_deserializer=ExportTraceServiceResponse.FromString,
            )
        )


class WireSpanExporter(OTLPSpanExporter):
    """The SDK's `OTLPSpanExporter` sending `encode_request`'s bytes.

    It keeps everything of the SDK exporter but the encoding: channel and credentials,
    retries with backoff on transient codes, reconnection after UNAVAILABLE, shutdown. It
    puts its stub in through the SDK's `_initialize_channel_and_stub` hook (called at
    start and on each reconnection); should a later SDK stop calling that hook, the SDK's
    stub stays and so does its encoder (`_translate_data` checks which stub it has).
    """

    def _initialize_channel_and_stub(self) -> None:
        super()._initialize_channel_and_stub()  # type: ignore[no-untyped-call,unused-ignore]
        channel: grpc.Channel = self._channel  # type: ignore[assignment,unused-ignore]  # set just above
        self._client = _WireTraceStub(channel)  # type: ignore[assignment,unused-ignore]

    def _translate_data(self, data: Sequence[ReadableSpan]) -> Any:
        if isinstance(self._client, _WireTraceStub):
            return encode_request(data)
        return super()._translate_data(data)

    @property
    def encodes_on_the_wire(self) -> bool:
        """Whether requests go out as `encode_request`'s bytes (else the SDK's encoder)."""
        return isinstance(self._client, _WireTraceStub)
