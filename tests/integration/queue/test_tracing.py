"""One work order's life is one trace: submit, lease, completion share trace and correlation id."""

from __future__ import annotations

import asyncio
import contextvars

from opentelemetry import propagate, trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from conveyor.queue.v1 import service_pb2 as rpc
from conveyor_core.context import correlation_scope
from tests.helpers.queue import QueueEnv, queue_name, spec


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
    assert {s.name for s in order_spans} == {
        "work_order.submitted",
        "work_order.leased",
        "work_order.completed",
    }
    assert {s.context.trace_id for s in order_spans} == {trace_id}
    assert {s.attributes["conveyor.correlation_id"] for s in order_spans} == {"order-42"}
    submit_server = [
        s
        for s in finished
        if s.name.endswith("/SubmitWorkOrder") and s.kind == trace.SpanKind.SERVER
    ]
    assert [s.context.trace_id for s in submit_server] == [trace_id]
    assert submit_server[0].attributes["conveyor.correlation_id"] == "order-42"


async def test_batch_completion_spans_join_each_orders_trace(
    env: QueueEnv, spans: InMemorySpanExporter
) -> None:
    spans.clear()
    tracer = trace.get_tracer("test")
    submitted: dict[str, int] = {}
    for key in ("order-a", "order-b"):
        with correlation_scope(key), tracer.start_as_current_span("client.submit") as span:
            order = await env.submit()
            submitted[order.name.rsplit("/", 1)[1]] = span.get_span_context().trace_id

    async def work() -> None:
        leased = await env.lease(n=2)
        await env.stub.BatchCompleteWorkOrders(
            rpc.BatchCompleteWorkOrdersRequest(
                parent="namespaces/test",
                requests=[
                    rpc.CompleteWorkOrderRequest(
                        name=lw.work_order.name, lease_token=lw.lease_token
                    )
                    for lw in leased
                ],
            )
        )

    await asyncio.create_task(work(), context=contextvars.Context())
    completed = [s for s in spans.get_finished_spans() if s.name == "work_order.completed"]
    assert {
        s.attributes["conveyor.work_order.id"]: s.context.trace_id for s in completed
    } == submitted
    assert {s.attributes["conveyor.work_order.state"] for s in completed} == {"SUCCEEDED"}
    assert {s.attributes["conveyor.work_order.attempt"] for s in completed} == {1}
    assert {s.attributes["conveyor.correlation_id"] for s in completed} == {"order-a", "order-b"}


async def test_batch_items_carry_their_own_trace_and_correlation_id(
    env: QueueEnv, spans: InMemorySpanExporter
) -> None:
    """One batch call, two orders from two traces: each order's spans join its own trace."""
    spans.clear()
    tracer = trace.get_tracer("test")
    items, trace_ids = [], {}
    for key in ("fire-a", "fire-b"):
        with tracer.start_as_current_span(f"client.{key}") as span:
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            trace_ids[key] = span.get_span_context().trace_id
        items.append(
            rpc.SubmitWorkOrderRequest(
                work_order=spec(), traceparent=carrier["traceparent"], correlation_id=key
            )
        )
    items.append(rpc.SubmitWorkOrderRequest(work_order=spec()))  # no own context: the call's
    with correlation_scope("the-call"), tracer.start_as_current_span("client.batch") as call:
        response = await env.stub.BatchSubmitWorkOrders(
            rpc.BatchSubmitWorkOrdersRequest(parent=queue_name(), requests=items)
        )
        trace_ids["the-call"] = call.get_span_context().trace_id
    keys = {
        r.work_order.name.rsplit("/", 1)[1]: key
        for r, key in zip(response.responses, ("fire-a", "fire-b", "the-call"), strict=True)
    }
    assert [r.work_order.correlation_id for r in response.responses] == [
        "fire-a",
        "fire-b",
        "the-call",
    ]

    async def work() -> None:
        for leased in await env.lease(n=3):
            await env.complete(leased)

    await asyncio.create_task(work(), context=contextvars.Context())
    order_spans = [
        s
        for s in spans.get_finished_spans()
        if s.name.startswith("work_order.") and s.attributes["conveyor.work_order.id"] in keys
    ]
    assert len(order_spans) == 9  # submitted, leased, completed for each
    for s in order_spans:
        key = keys[s.attributes["conveyor.work_order.id"]]
        assert s.context.trace_id == trace_ids[key], (s.name, key)
        assert s.attributes["conveyor.correlation_id"] == key
