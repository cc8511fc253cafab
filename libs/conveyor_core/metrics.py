"""Metrics: OpenTelemetry instruments, scraped by Prometheus.

`configure_metrics` installs one SDK `MeterProvider` per process. With
`CoreSettings.metrics_port` set, a Prometheus exporter serves `/metrics` on
that port (instrument `conveyor.scheduler.slots_skipped` becomes
`conveyor_scheduler_slots_skipped_total`). Code creates instruments through
`meter(__name__)` at import time; the API's proxy meter starts recording once
a provider is installed, so the order of imports and configuration is free.

Tests pass an `InMemoryMetricReader` as `extra_reader` (see
tests/helpers/metrics.py) and read the points back.
"""

from __future__ import annotations

import logging
import threading

from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.resources import SERVICE_NAME, Resource

from conveyor_core.settings import CoreSettings

logger = logging.getLogger(__name__)

_provider: MeterProvider | None = None
_lock = threading.Lock()


def configure_metrics(
    service_name: str, settings: CoreSettings, extra_reader: MetricReader | None = None
) -> MeterProvider:
    """Install the process-wide meter provider once; later calls return it unchanged.

    Args:
        service_name: `service.name` of the resource.
        settings: `metrics_port` > 0 serves Prometheus `/metrics` there.
        extra_reader: an additional reader (tests); only the first call may pass one.

    Raises:
        RuntimeError: `extra_reader` given after the provider was installed.
    """
    global _provider
    with _lock:
        if _provider is not None:
            if extra_reader is not None:
                raise RuntimeError("metrics already configured; a reader can no longer be added")
            return _provider
        readers: list[MetricReader] = []
        if settings.metrics_port:
            # Imported here: prometheus_client starts nothing until asked.
            from opentelemetry.exporter.prometheus import PrometheusMetricReader
            from prometheus_client import start_http_server

            start_http_server(settings.metrics_port, addr=settings.metrics_host)
            readers.append(PrometheusMetricReader())
            logger.info(
                "serving Prometheus metrics on %s:%d", settings.metrics_host, settings.metrics_port
            )
        if extra_reader is not None:
            readers.append(extra_reader)
        _provider = MeterProvider(
            metric_readers=readers, resource=Resource.create({SERVICE_NAME: service_name})
        )
        metrics.set_meter_provider(_provider)
        return _provider


def announce(*counters: metrics.Counter | metrics.UpDownCounter) -> None:
    """Add 0 without labels to each counter, so rare-event counters (dead letters, lease
    expiries, tokens) are exported from the start: a dashboard or rule naming them
    finds the metric, and `increase()` sees the first event. Call when a service
    starts (before a provider is installed, the API drops what is recorded)."""
    for counter in counters:
        counter.add(0)


def meter(name: str) -> metrics.Meter:
    """A meter for instrumentation scope `name` (use the module's `__name__`)."""
    return metrics.get_meter(name)
