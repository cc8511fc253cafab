"""Tracing set-up and log records that carry trace and correlation ids."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from conveyor_core import logscrub
from conveyor_core.context import correlation_scope
from conveyor_core.settings import CoreSettings
from conveyor_core.telemetry import configure_logging, configure_tracing, trace_context_of, tracer

logger = logging.getLogger("conveyor_test.telemetry")


@pytest.fixture
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logscrub.uninstall()  # configure_logging installed the scrubbing record factory


def test_second_configure_extends_the_same_provider() -> None:
    first_exporter, second_exporter = InMemorySpanExporter(), InMemorySpanExporter()

    first = configure_tracing("conveyor-unit", CoreSettings(), extra_exporter=first_exporter)
    second = configure_tracing("conveyor-other", CoreSettings(), extra_exporter=second_exporter)
    with tracer(__name__).start_as_current_span("unit-span"):
        pass

    assert first is second
    for exporter in (first_exporter, second_exporter):
        assert [span.name for span in exporter.get_finished_spans()] == ["unit-span"]


def test_json_records_carry_trace_correlation_and_extra_fields(
    restore_root_logger: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_tracing("conveyor-unit", CoreSettings())
    configure_logging(CoreSettings(log_format="json", log_level="DEBUG"))

    with (
        correlation_scope("log-cid"),
        tracer(__name__).start_as_current_span("logging") as span,
    ):
        logger.info("leased %s", "wo-1", extra={"work_order_id": "wo-1"})
    logger.debug("outside any span")

    first, second = (json.loads(line) for line in capsys.readouterr().err.splitlines())
    context = span.get_span_context()
    assert first["message"] == "leased wo-1"
    assert first["level"] == "INFO"
    assert first["trace_id"] == format(context.trace_id, "032x")
    assert first["span_id"] == format(context.span_id, "016x")
    assert first["correlation_id"] == "log-cid"
    assert first["work_order_id"] == "wo-1"
    assert second["message"] == "outside any span"
    assert "trace_id" not in second and "correlation_id" not in second


def test_text_records_append_the_fields_that_are_set(
    restore_root_logger: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(CoreSettings(log_format="text"))

    with correlation_scope("text-cid"):
        logger.warning("queue %s paused", "billing", extra={"queue": "billing"})
    logger.info("plain")

    first, second = capsys.readouterr().err.splitlines()
    assert first.endswith(
        "WARNING conveyor_test.telemetry queue billing paused correlation_id=text-cid queue=billing"
    )
    assert second.endswith("INFO conveyor_test.telemetry plain")


def test_exceptions_are_logged_with_traceback_in_json(
    restore_root_logger: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(CoreSettings(log_format="json"))

    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logger.exception("failed")

    record = json.loads(capsys.readouterr().err)
    assert "RuntimeError: boom" in record["exception"]


def test_configure_logging_replaces_its_own_handler_only(restore_root_logger: None) -> None:
    root = logging.getLogger()
    others = list(root.handlers)

    configure_logging(CoreSettings())
    handler = configure_logging(CoreSettings(log_level="WARNING"))

    assert root.handlers == [*others, handler]
    assert root.level == logging.WARNING


@pytest.mark.parametrize(
    "traceparent",
    [
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-03",
        "00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01",  # upper case
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",  # zero trace id
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",  # zero span id
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  # forbidden version
        "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-future",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
        "00-0af7651916cd43dd8448eb211c80319g-b7ad6b7169203331-01",  # not hex
        "00-0af7651916cd43dd8448eb211c8031-b7ad6b7169203331-01",  # short
        " 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "garbage",
    ],
)
def test_trace_context_of_reads_a_traceparent_as_the_propagator_does(traceparent: str) -> None:
    expected = trace.get_current_span(
        propagate.extract({"traceparent": traceparent})
    ).get_span_context()
    context = trace_context_of(traceparent)
    assert context is not None
    assert trace.get_current_span(context).get_span_context() == expected


def test_trace_context_of_nothing_is_none() -> None:
    assert trace_context_of("") is None
