"""Instruments created through conveyor_core.metrics record into the configured provider."""

from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from conveyor_core.metrics import meter
from tests.helpers.metrics import metric_value


def test_a_counter_created_through_meter_is_read_back_by_attributes(
    metric_reader: InMemoryMetricReader,
) -> None:
    counter = meter(__name__).create_counter("conveyor.test.things", unit="{thing}")
    counter.add(2, {"schedule": "a"})
    counter.add(3, {"schedule": "b"})
    assert metric_value(metric_reader, "conveyor.test.things", {"schedule": "a"}) == 2
    assert metric_value(metric_reader, "conveyor.test.things") == 5
