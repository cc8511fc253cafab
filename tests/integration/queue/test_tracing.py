"""One work order's life is one trace: submit, lease, completion share trace and correlation id."""

from __future__ import annotations

import asyncio
import contextvars

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from conveyor_core.context import correlation_scope
from conveyor_core.settings import CoreSettings
from conveyor_core.telemetry import configure_tracing
from tests.helpers.queue import QueueEnv


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    configure_tracing("conveyor-test", CoreSettings(), extra_exporter=exporter)
    return exporter


async def test_order_steps_share_the_submitters_trace_and_correlation_id(
    env: QueueEnv, spans: InMemorySpanExporter
) -> None:
    spans.clear()
    tracer = trace.get_tracer("test")

    async def submit() -> tuple[str, int]:
        with correlation_scope("order-42"), tracer.start_as_current_span("client.submit") as span:
            order = await env.submit()
            return order.name, span.get_span_context().trace_id

    name, trace_id = await submit()

    async def work() -> None:  # a worker elsewhere: its own context, no correlation id
        [leased] = await env.lease()
        await env.complete(leased)

    await asyncio.create_task(work(), context=contextvars.Context())
    finished = spans.get_finished_spans()
    order_spans = [
        s
        for s in finished
        if s.name.startswith("work_order.")
        and s.attributes.get("conveyor.work_order.id") == name.rsplit("/", 1)[1]
    ]
    assert {s.name for s in order_spans} == {"work_order.leased", "work_order.completed"}
    assert {s.context.trace_id for s in order_spans} == {trace_id}
    assert {s.attributes["conveyor.correlation_id"] for s in order_spans} == {"order-42"}
    submit_server = [
        s
        for s in finished
        if s.name.endswith("/SubmitWorkOrder") and s.kind == trace.SpanKind.SERVER
    ]
    assert [s.context.trace_id for s in submit_server] == [trace_id]
    assert submit_server[0].attributes["conveyor.correlation_id"] == "order-42"
