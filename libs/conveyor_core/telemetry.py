"""Tracing and logging set-up, done once at process start.

`configure_tracing` installs one OpenTelemetry SDK `TracerProvider` per process
(exporting to an OTLP/gRPC collector such as Jaeger when
`CoreSettings.otlp_endpoint` is set) and W3C trace-context propagation, which
the gRPC interceptors use to carry one trace across services.

`configure_logging` sets up the root logger so that every record carries
`trace_id`, `span_id` and `correlation_id`: in text format they are appended to
the line, in JSON format they are fields, along with any `extra={...}` fields
(such as `work_order_id`).
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from conveyor_core import logscrub
from conveyor_core.context import get_correlation_id
from conveyor_core.settings import CoreSettings

if TYPE_CHECKING:
    from conveyor_core.otlp import QuietSpanExporter

logger = logging.getLogger(__name__)

_provider: TracerProvider | None = None
_otlp_exporter: QuietSpanExporter | None = None
_provider_lock = threading.Lock()


def configure_tracing(
    service_name: str,
    settings: CoreSettings,
    extra_exporter: SpanExporter | None = None,
) -> TracerProvider:
    """Install the process-wide tracer provider, or extend the one already installed.

    The OpenTelemetry API allows one global provider per process, so the first
    call decides the resource (`service.name`) and the OTLP export; a later
    call (another service in the same process, or a test) only adds
    `extra_exporter` to the existing provider.

    Args:
        service_name: `service.name` of the resource, e.g. "conveyor-queue".
        settings: `otlp_endpoint` selects OTLP/gRPC export (batched); empty: none.
        extra_exporter: exported to synchronously, span by span (tests pass an
            `InMemorySpanExporter`).

    Returns:
        The provider in use.
    """
    global _provider
    with _provider_lock:
        if _provider is None:
            _provider = _adopt_or_create_provider(service_name, settings)
        elif _provider.resource.attributes.get(SERVICE_NAME) != service_name:
            logger.info(
                "tracing already configured for %s; %s shares its provider",
                _provider.resource.attributes.get(SERVICE_NAME),
                service_name,
            )
        if extra_exporter is not None:
            _provider.add_span_processor(SimpleSpanProcessor(extra_exporter))
        return _provider


def _adopt_or_create_provider(service_name: str, settings: CoreSettings) -> TracerProvider:
    propagate.set_global_textmap(
        CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])
    )
    existing = trace.get_tracer_provider()
    if isinstance(existing, TracerProvider):
        # Someone (a test harness, auto-instrumentation) installed an SDK
        # provider first; setting another would be ignored with a warning.
        return existing
    global _otlp_exporter
    provider = TracerProvider(
        resource=Resource.create({SERVICE_NAME: service_name}),
        sampler=ParentBased(TraceIdRatioBased(settings.trace_sample_ratio)),
    )
    if settings.otlp_endpoint:
        from conveyor_core.otlp import otlp_span_exporter

        _otlp_exporter = otlp_span_exporter(settings)
        provider.add_span_processor(
            BatchSpanProcessor(
                _otlp_exporter, export_timeout_millis=settings.otlp_timeout_seconds * 1000
            )
        )
        logger.info("exporting traces to %s", settings.otlp_endpoint)
    trace.set_tracer_provider(provider)
    return provider


def shutdown_tracing() -> None:
    """Flush and stop span export at process exit, each export bounded by
    `CONVEYOR_OTLP_SHUTDOWN_TIMEOUT_SECONDS` (none at all while the collector is down)."""
    with _provider_lock:
        provider, exporter = _provider, _otlp_exporter
    if exporter is not None:
        exporter.stopping()
    if provider is not None:
        provider.shutdown()


def tracer(name: str) -> trace.Tracer:
    """A tracer for instrumentation scope `name` (use the module's `__name__`).

    Safe to call before `configure_tracing`: the API's proxy tracer starts
    recording once a provider is installed.
    """
    return trace.get_tracer(name)


_HEX = frozenset("0123456789abcdef")


def trace_context_of(traceparent: str) -> otel_context.Context | None:
    """The context to start a span in the trace of a W3C `traceparent` (a work order's),
    as `propagate.extract({"traceparent": traceparent})` gives it; None for "".

    A version-00 header (what Conveyor writes) is read directly, a third of the
    propagator's cost, paid per order and span; anything else goes to the propagator,
    which also decides what is invalid (an empty context)."""
    if not traceparent:
        return None
    if (
        len(traceparent) == 55
        and traceparent.startswith("00-")
        and traceparent[35] == "-"
        and traceparent[52] == "-"
        and _HEX.issuperset(traceparent[3:35])
        and _HEX.issuperset(traceparent[36:52])
        and _HEX.issuperset(traceparent[53:])
    ):
        trace_id, span_id = int(traceparent[3:35], 16), int(traceparent[36:52], 16)
        if trace_id and span_id:
            flags = trace.TraceFlags(int(traceparent[53:], 16))
            parent = trace.SpanContext(trace_id, span_id, is_remote=True, trace_flags=flags)
            return trace.set_span_in_context(trace.NonRecordingSpan(parent))
    return propagate.extract({"traceparent": traceparent})


class TelemetryContextFilter(logging.Filter):
    """Adds `trace_id`, `span_id` and `correlation_id` ("" when absent) to each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            record.trace_id = format(span_context.trace_id, "032x")
            record.span_id = format(span_context.span_id, "016x")
        else:
            record.trace_id = record.span_id = ""
        record.correlation_id = get_correlation_id() or ""
        return True


_CONTEXT_FIELDS = ("trace_id", "span_id", "correlation_id")
# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD_RECORD_FIELDS = frozenset(
    [
        *logging.LogRecord("", 0, "", 0, "", (), None).__dict__,
        "message",
        "asctime",
        *_CONTEXT_FIELDS,
    ]
)


class TextFormatter(logging.Formatter):
    """`time level logger message key=value...`: the context and extra fields that are set."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        fields = [
            f"{key}={value}" for key, value in _fields_of(record).items() if value not in ("", None)
        ]
        return f"{line} {' '.join(fields)}" if fields else line


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        document.update(
            (key, value) for key, value in _fields_of(record).items() if value not in ("", None)
        )
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:  # scrubbed (conveyor_core.logscrub)
            document["exception"] = record.exc_text
        if record.stack_info:
            document["stack"] = self.formatStack(record.stack_info)
        return json.dumps(document, default=str)


def _fields_of(record: logging.LogRecord) -> dict[str, object]:
    fields = {key: getattr(record, key, "") for key in _CONTEXT_FIELDS}
    fields.update(
        (key, value)
        for key, value in record.__dict__.items()
        if key not in _STANDARD_RECORD_FIELDS and not key.startswith("_")
    )
    return fields


class ScrubbingFilter(logging.Filter):
    """Scrubs a record again as a handler sees it: `extra=` fields are set after the record
    factory ran (conveyor_core.logscrub scrubs everything else at creation)."""

    def __init__(self, scrubber: logscrub.LogScrubber) -> None:
        super().__init__()
        self._scrubber = scrubber

    def filter(self, record: logging.LogRecord) -> bool:
        self._scrubber.scrub_record(record)
        return True


class _ConveyorHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler `configure_logging` installed, so a second call replaces it."""


def configure_logging(settings: CoreSettings) -> logging.Handler:
    """Log to stderr at `settings.log_level` in `settings.log_format` ("text" or "json"),
    every record scrubbed of secrets (conveyor_core.logscrub, `settings.log_scrub_patterns`).

    Idempotent: a second call replaces the handler the first one installed and
    leaves other handlers (pytest's, for instance) alone.

    Returns:
        The installed handler.
    """
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _ConveyorHandler)]:
        root.removeHandler(handler)
    scrubber = logscrub.install(settings.log_scrub_patterns)
    handler = _ConveyorHandler(sys.stderr)
    handler.addFilter(TelemetryContextFilter())
    handler.addFilter(ScrubbingFilter(scrubber))
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    return handler
