"""OTLP/gRPC span export that stays quiet and quick when the collector is away.

The SDK's `OTLPSpanExporter` retries each batch within its own timeout and logs
a WARNING per retry and an ERROR per lost batch, and at process exit its last
export keeps retrying for most of that timeout (about 7 s with the default
10 s). `QuietSpanExporter` wraps it:

* one WARNING when export starts failing (then DEBUG), one INFO when it works
  again: no log flood while a collector is down or not deployed yet;
* while failing, batches are dropped without a call until a backoff passes
  (doubling from 1 s to `CONVEYOR_OTLP_RETRY_MAX_SECONDS`): quiet retries
  that cost nothing, memory bounded by the batch processor's queue;
* each export call is bounded by `CONVEYOR_OTLP_TIMEOUT_SECONDS`, and once
  `stopping()` was called (process shutdown) by
  `CONVEYOR_OTLP_SHUTDOWN_TIMEOUT_SECONDS`; a collector known to be down is
  not called at all during shutdown.

The requests themselves are encoded by `conveyor_core.otlp_wire` (the same bytes as the
SDK's encoder, about 4 times faster) and sent through the SDK exporter's own channel,
retries and reconnection (`otlp_wire.WireSpanExporter`).

Settings also cover TLS (`CONVEYOR_OTLP_CA_FILE`, or an https:// endpoint for
the system roots), headers (`CONVEYOR_OTLP_HEADERS`, e.g. an API key) and the
sampling ratio (`CONVEYOR_TRACE_SAMPLE_RATIO`, in conveyor_core.telemetry).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import grpc
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from conveyor_core.settings import CoreSettings

logger = logging.getLogger(__name__)

#: The SDK exporter's own logger: its per-retry warnings and per-batch errors are
#: replaced by this module's one warning per outage.
SDK_EXPORTER_LOGGER = "opentelemetry.exporter.otlp.proto.grpc.exporter"
FIRST_BACKOFF_SECONDS = 1.0


def parse_headers(text: str) -> dict[str, str]:
    """`key=value,key2=value2` (the OTEL_EXPORTER_OTLP_HEADERS format) as a dict.

    Raises:
        ValueError: an entry without `=`, or an empty key.
    """
    headers: dict[str, str] = {}
    for entry in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = entry.partition("=")
        if not sep or not key.strip():
            raise ValueError("must be key=value pairs separated by commas")
        headers[key.strip().lower()] = value.strip()
    return headers


class QuietSpanExporter(SpanExporter):
    """Wraps an OTLP span exporter with one-warning failure reporting and a backoff."""

    def __init__(
        self,
        inner: SpanExporter,
        endpoint: str,
        timeout_seconds: float,
        shutdown_timeout_seconds: float,
        retry_max_seconds: float,
    ) -> None:
        self._inner = inner
        self._endpoint = endpoint
        self._timeout = timeout_seconds
        self._shutdown_timeout = shutdown_timeout_seconds
        self._retry_max = retry_max_seconds
        self._lock = threading.Lock()
        self._failing = False
        self._backoff = FIRST_BACKOFF_SECONDS
        self._next_try = 0.0  # time.monotonic(); 0: try now
        self._stopping = False
        self.dropped = 0  # spans dropped while the collector was unreachable

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            if self._failing and (self._stopping or time.monotonic() < self._next_try):
                self.dropped += len(spans)
                return SpanExportResult.FAILURE
        result = self._inner.export(spans)
        with self._lock:
            if result is SpanExportResult.SUCCESS:
                if self._failing:
                    logger.info(
                        "trace export to %s works again (%d spans dropped meanwhile)",
                        self._endpoint,
                        self.dropped,
                    )
                self._failing, self._backoff, self.dropped = False, FIRST_BACKOFF_SECONDS, 0
            else:
                self.dropped += len(spans)
                if not self._failing:
                    logger.warning(
                        "trace export to %s failed; spans are dropped and export retried "
                        "quietly with backoff (up to %.0fs) until the collector answers",
                        self._endpoint,
                        self._retry_max,
                    )
                else:
                    logger.debug("trace export to %s still failing", self._endpoint)
                self._failing = True
                self._next_try = time.monotonic() + self._backoff
                self._backoff = min(self._backoff * 2, self._retry_max)
        return result

    def stopping(self) -> None:
        """The process stops: bound the last exports by the shutdown timeout, and skip them
        while the collector is known to be down."""
        with self._lock:
            self._stopping = True
        # The SDK exporter reads its timeout per export and has no public setter; its
        # shutdown event ends the retry pause of an export in progress, so one started
        # before the stop does not keep the process for the rest of its timeout.
        if hasattr(self._inner, "_timeout"):
            self._inner._timeout = min(self._timeout, self._shutdown_timeout)
        shutting_down = getattr(self._inner, "_shutdown_in_progress", None)
        if isinstance(shutting_down, threading.Event):
            shutting_down.set()

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._inner.force_flush(timeout_millis)


def otlp_span_exporter(settings: CoreSettings) -> QuietSpanExporter:
    """The exporter `configure_tracing` installs for `settings.otlp_endpoint`.

    Raises:
        ConfigurationError: the CA file is unreadable or the headers are malformed
            (checked when settings load, see CoreSettings).
    """
    logging.getLogger(SDK_EXPORTER_LOGGER).setLevel(logging.CRITICAL)
    endpoint = settings.otlp_endpoint
    credentials = None
    if settings.otlp_ca_file:
        credentials = grpc.ssl_channel_credentials(Path(settings.otlp_ca_file).read_bytes())
    # Imported here: the exporter pulls in its own gRPC channel machinery, which
    # processes without a collector never need.
    from conveyor_core.otlp_wire import WireSpanExporter

    inner = WireSpanExporter(
        endpoint=endpoint,
        insecure=None if credentials or endpoint.startswith("https://") else True,
        credentials=credentials,
        headers=parse_headers(settings.otlp_headers.get_secret_value()) or None,
        timeout=settings.otlp_timeout_seconds,
    )
    return QuietSpanExporter(
        inner,
        endpoint,
        settings.otlp_timeout_seconds,
        settings.otlp_shutdown_timeout_seconds,
        settings.otlp_retry_max_seconds,
    )
