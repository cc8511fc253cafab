"""Reading OpenTelemetry metrics back in tests (see the `metric_reader` fixture)."""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry.sdk.metrics.export import InMemoryMetricReader


def metric_value(
    reader: InMemoryMetricReader, name: str, attributes: Mapping[str, str] | None = None
) -> float:
    """Sum of the points of metric `name` whose attributes include `attributes` (0 if none)."""
    data = reader.get_metrics_data()
    total = 0.0
    if data is None:
        return total
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                if metric.name != name:
                    continue
                for point in metric.data.data_points:
                    if all(point.attributes.get(k) == v for k, v in (attributes or {}).items()):
                        total += getattr(point, "value", getattr(point, "sum", 0))
    return total
