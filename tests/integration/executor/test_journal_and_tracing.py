"""An order's run joins its trace and correlation id; its lifecycle reaches the journal."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from conveyor.executor.v1 import messages_pb2 as pb
from conveyor.queue.v1 import messages_pb2 as Q
from conveyor_core.context import correlation_scope
from conveyor_core.settings import CoreSettings
from tests.helpers.executor import ExecutorEnv, command_invocation, poll
from tests.helpers.journal import JournalEnv


@pytest.fixture
async def journal(core: CoreSettings) -> AsyncIterator[JournalEnv]:
    env = await JournalEnv(core).start()
    yield env
    await env.stop()


async def _submit_traced(executor: ExecutorEnv, *argv: str) -> tuple[Q.WorkOrder, int]:
    with (
        correlation_scope("order-77"),
        trace.get_tracer("test").start_as_current_span("client.submit") as span,
    ):
        order = await executor.submit(command_invocation(*argv, job="namespaces/test/jobs/j"))
        return order, span.get_span_context().trace_id


async def test_the_run_heartbeats_and_completion_share_the_orders_trace_and_correlation(
    executor: ExecutorEnv, spans: InMemorySpanExporter
) -> None:
    spans.clear()
    order, trace_id = await _submit_traced(executor, "ok")
    await executor.wait_run(order, [pb.RUN_STATE_SUCCEEDED])

    async def run_spans() -> list[ReadableSpan]:
        return [
            s
            for s in spans.get_finished_spans()
            if s.name == "executor.run" and s.attributes.get("conveyor.work_order.id") == order.id
        ]

    # The run is recorded SUCCEEDED before the order is completed, and its span ends after.
    [run_span] = await poll(run_spans, lambda found: len(found) == 1)
    finished = spans.get_finished_spans()
    assert run_span.context.trace_id == trace_id
    complete = [
        s
        for s in finished
        if s.name.endswith("/CompleteWorkOrder")
        and s.kind == trace.SpanKind.SERVER
        and s.context.trace_id == trace_id
    ]
    assert len(complete) == 1
    assert complete[0].attributes["conveyor.correlation_id"] == "order-77"
    run = await executor.get_run(order)
    assert (run.correlation_id, run.trace_id) == ("order-77", format(trace_id, "032x"))


async def test_run_lifecycle_records_reach_the_journal_with_trace_and_correlation(
    executor: ExecutorEnv, journal: JournalEnv, spans: InMemorySpanExporter
) -> None:
    await executor.service.attach_journal(journal.address)
    order, trace_id = await _submit_traced(executor, "fail", "auth", "false")
    await executor.wait_run(order, [pb.RUN_STATE_FAILED])
    records = await poll(
        lambda: journal.read_all(subject=order.id, type_prefix="executor."),
        lambda found: len(found) >= 2,
    )
    assert [r.type for r in records] == ["executor.run.started", "executor.run.failed"]
    assert {r.correlation_id for r in records} == {"order-77"}
    assert {r.trace_id for r in records} == {format(trace_id, "032x")}
    failed = records[1]
    assert dict(failed.subjects) == {
        "run": order.id,
        "work_order": order.id,
        "job": "namespaces/test/jobs/j",
    }
    assert (failed.attributes["error_type"], failed.attributes["error_retryable"]) == (
        "auth",
        "false",
    )
    await poll(executor.service.outbox.undelivered_count, lambda left: left == 0)
