"""Operating workflows: consumers fired by pending events alone, pause and resume, per-producer
schedules, handler preflight, the journal and one trace, the SDK's client, and who may resolve."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import conveyor
from conveyor.common.v1 import job_pb2, types_pb2
from conveyor.events.v1 import messages_pb2 as events_pb
from conveyor.events.v1 import service_pb2 as events_rpc
from conveyor.events.v1 import service_pb2_grpc as events_grpc
from conveyor.executor.v1 import messages_pb2 as executor_pb
from conveyor.executor.v1 import service_pb2 as executor_rpc
from conveyor.executor.v1 import service_pb2_grpc as executor_grpc
from conveyor.executor.v1 import workflow_pb2 as P
from conveyor.executor.v1 import workflow_pb2_grpc as wf_grpc
from conveyor.queue.v1 import messages_pb2 as queue_pb
from conveyor.queue.v1 import service_pb2 as queue_rpc
from conveyor.queue.v1 import service_pb2_grpc as queue_grpc
from conveyor.scheduler.v1 import service_pb2 as sched_rpc
from conveyor_core.fake_shop import FakeShop
from conveyor_core.grpc import create_channel
from conveyor_core.runtime import Platform
from conveyor_core.settings import CoreSettings
from conveyor_executor.domain.invocation import JOB_INVOCATION_CONTENT_TYPE
from tests.helpers import workflow_app
from tests.helpers.e2e import eventually
from tests.helpers.security import Principals
from tests.integration.workflows.conftest import EXECUTOR_ENV, REGISTRATION_LIMIT, Env


async def _publish(env: Env, topic: str, message_id: str, payload: object) -> None:
    async with create_channel(env.address) as channel:
        await events_grpc.EventStoreServiceStub(channel).PublishEvents(
            events_rpc.PublishEventsRequest(
                parent=f"namespaces/wf/topics/{topic}",
                events=[
                    events_pb.EventDraft(
                        message_id=message_id,
                        title=f"Order {message_id} from outside",
                        payload=types_pb2.Payload(
                            data=json.dumps(payload).encode(), content_type="application/json"
                        ),
                    )
                ],
            )
        )


async def _charged(env: Env, order_id: int) -> bool:
    return bool(env.shop.charges_of(order_id))


async def test_events_published_by_anyone_fire_the_consumer_after_its_debounce(env: Env) -> None:
    await eventually(
        lambda: env._schedule_exists(_consumer_schedule("charge_order")),
        "trigger",
        REGISTRATION_LIMIT,
    )

    async def quiet() -> bool:  # the producer's first slot fired at registration: let it end
        sessions = await env.sessions("shop")
        return bool(sessions) and all(x.state != P.SESSION_STATE_RUNNING for x in sessions)

    await eventually(quiet, "the registration-time session ended", 60)
    await _publish(env, "orders", "order-77", {"id": 77, "customer": "zoe", "amount": 7})
    await eventually(lambda: _charged(env, 77), "the consumer charged order 77", 60)
    sessions = await env.sessions("shop")
    assert any(x.trigger == "charge_order" for x in sessions), "fired by the on-event trigger"
    assert len(env.shop.charges) == 1


def _consumer_schedule(handler: str) -> str:
    ident = f"wf-shop-{handler.replace('_', '-')}"
    return f"namespaces/wf/jobs/{ident}/schedules/{ident}"


async def test_a_paused_workflow_runs_nothing_until_it_is_resumed(env: Env) -> None:
    name = "namespaces/wf/workflows/shop"
    await env.registered("shop")
    paused = await env.workflows.PauseWorkflow(
        P.PauseWorkflowRequest(name=name, reason="payment provider maintenance", paused_by="ops")
    )
    assert paused.workflow.paused and paused.workflow.pause_reason == "payment provider maintenance"
    env.shop.add_order("pia", 5)
    await env.trigger("shop", "poll_orders")

    async def a_paused_session() -> bool:
        return any(s.state == P.SESSION_STATE_PAUSED for s in await env.sessions("shop"))

    await eventually(a_paused_session, "a session that ended PAUSED", 60)
    assert not env.shop.charges
    await env.workflows.ResumeWorkflow(P.ResumeWorkflowRequest(name=name))
    await env.trigger("shop", "poll_orders")
    await eventually(lambda: _charged(env, 1), "the order charged after resume", 60)


async def test_each_producer_has_its_own_schedule(env: Env) -> None:
    five = "namespaces/wf/jobs/wf-timing-every-five-minutes/schedules/wf-timing-every-five-minutes"
    hourly = "namespaces/wf/jobs/wf-timing-hourly/schedules/wf-timing-hourly"
    await eventually(
        lambda: env._schedule_exists(hourly), "the producers' schedules", REGISTRATION_LIMIT
    )
    await env.registered("timing")
    first = (await env.scheduler.GetSchedule(sched_rpc.GetScheduleRequest(name=five))).schedule
    second = (await env.scheduler.GetSchedule(sched_rpc.GetScheduleRequest(name=hourly))).schedule
    assert first.interval.every.seconds == 300
    assert second.cron.expression == "0 * * * *" and second.cron.time_zone == "Europe/Berlin"
    workflow = (
        await env.workflows.GetWorkflow(P.GetWorkflowRequest(name="namespaces/wf/workflows/timing"))
    ).workflow
    assert {h.schedule for h in workflow.handlers} == {five, hourly}


async def test_an_order_naming_a_handler_the_code_lacks_fails_before_any_phase(env: Env) -> None:
    invocation = job_pb2.JobInvocation(
        target=job_pb2.JobTarget(workflow=job_pb2.WorkflowTarget(workflow="shop", handler="refund"))
    )
    async with create_channel(env.address) as channel:
        queue = queue_grpc.WorkOrderQueueServiceStub(channel)
        order = (
            await queue.SubmitWorkOrder(
                queue_rpc.SubmitWorkOrderRequest(
                    parent="namespaces/wf/queues/shop-sessions",
                    work_order=queue_pb.WorkOrderSpec(
                        payload=types_pb2.Payload(
                            data=invocation.SerializeToString(),
                            content_type=JOB_INVOCATION_CONTENT_TYPE,
                        )
                    ),
                )
            )
        ).work_order
        executor = executor_grpc.ExecutorServiceStub(channel)

        async def failed_run() -> executor_pb.Run | None:
            try:
                run = (
                    await executor.GetRun(
                        executor_rpc.GetRunRequest(name=f"namespaces/wf/runs/{order.id}")
                    )
                ).run
            except grpc.aio.AioRpcError:
                return None
            return run if run.state == executor_pb.RUN_STATE_FAILED else None

        run = await eventually(failed_run, "the run failed", 60)
    assert run.failure.message == (
        "handler not found: refund (workflow shop defines: charge_order, notify, poll_orders)"
    )
    assert run.failure.type == "invalid_input" and not run.failure.retryable


async def test_transitions_are_journaled_and_one_trace_spans_the_fire_to_the_commit(
    env: Env, spans: InMemorySpanExporter
) -> None:
    spans.clear()
    env.shop.add_order("ray", 8)
    async with conveyor.Client(env.address, namespace="wf") as client:
        await eventually(lambda: _fire(client, workflow_app.poll_orders), "fired")
    await eventually(lambda: _charged(env, 1), "the order charged", 60)
    async with create_channel(env.address) as channel:
        journal = events_grpc.JournalServiceStub(channel)

        expected = {
            "workflow.session.started",
            "workflow.handler_run.executing",
            "workflow.handler_run.prepared",
            "workflow.mutation.in_flight",
            "workflow.mutation.applied",
            "workflow.handler_run.emitting",
            "workflow.handler_run.committed",
        }

        async def all_journaled() -> set[str] | None:
            reply = await journal.ReadJournal(
                events_rpc.ReadJournalRequest(
                    filter=events_rpc.JournalFilter(namespace="wf", type_prefix="workflow."),
                    page_size=1000,
                )
            )
            types = {r.type for r in reply.records}
            return types if expected <= types else None

        await eventually(all_journaled, f"every transition journaled: {sorted(expected)}", 60)

    def one_trace() -> bool:
        finished = spans.get_finished_spans()
        producer = [s for s in finished if s.name == "workflow.producer poll_orders"]
        consumer = [s for s in finished if s.name == "workflow.consumer charge_order"]
        return bool(producer and consumer) and (
            producer[0].context.trace_id == consumer[0].context.trace_id
        )

    async def traced() -> bool:
        return one_trace()

    await eventually(traced, "producer and consumer spans in one trace")
    trace_id = next(
        s.context.trace_id
        for s in spans.get_finished_spans()
        if s.name == "workflow.producer poll_orders"
    )
    names = {s.name for s in spans.get_finished_spans() if s.context.trace_id == trace_id}
    assert any("Commit" in n for n in names), names  # the event store's commit joined the trace


@pytest.fixture
async def secured(
    core: CoreSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_shop: FakeShop
) -> AsyncIterator[tuple[str, Principals]]:
    for name, value in EXECUTOR_ENV.items():
        monkeypatch.setenv(f"CONVEYOR_EXECUTOR_{name}", value)
    principals = Principals(tmp_path / "principals.json")
    principals.write()
    secure = core.model_copy(update={"auth_tokens_file": str(principals.path)})
    hosting = {"apps": [workflow_app.app], "only_app_queues": True}
    platform = Platform(secure, ["queue", "events", "scheduler", "executor"], hosting=hosting)
    port = await platform.start("127.0.0.1:0")
    yield f"127.0.0.1:{port}", principals
    await platform.stop(grace=1)


async def test_resolving_needs_the_operator_role_and_records_who(
    secured: tuple[str, Principals], fake_shop: FakeShop
) -> None:
    address, principals = secured
    viewer = principals.add("auditor", ["wf"], ["viewer"])
    operator = principals.add("oncall", ["wf"], ["operator", "viewer"])
    order = fake_shop.add_order("sam", 9, mode="apply_then_cut_unknown")
    async with conveyor.Client(address, namespace="wf", token=operator) as ops:
        await eventually(lambda: _fire(ops), "the producer fired")
        blocked = await eventually(lambda: ops.workflows.blocked_runs("shop"), "a blocked run", 60)
        async with conveyor.Client(address, namespace="wf", token=viewer) as auditor:
            assert [r.name for r in await auditor.workflows.blocked_runs("shop")] == [
                blocked[0].name
            ]
            with pytest.raises(conveyor.PermissionDenied):
                await auditor.workflows.resolve(
                    blocked[0].name, "skip", reason="not mine to decide"
                )
        reply = await ops.workflows.resolve(
            blocked[0].name, "applied", reason="seen in the dashboard", result={"charge_id": "ch_1"}
        )
        assert reply.mutation.resolved_by == "oncall"
        assert reply.mutation.resolution == P.RESOLUTION_APPLIED

        async def committed() -> bool:
            runs = await ops.workflows.blocked_runs("shop")
            return not runs

        await eventually(committed, "the resolved run resumed", 60)
    assert len(fake_shop.charges_of(order["id"])) == 1


async def _fire(client: conveyor.Client, handler: object = "shop.poll_orders") -> bool:
    try:
        fire = await client.workflows.trigger(handler)
        assert fire.name
    except conveyor.NotFound:
        return False  # registration has not created the schedule yet
    return True


_ = wf_grpc


async def test_the_scheduler_refuses_a_workflow_target_no_deployed_app_defines(env: Env) -> None:
    from conveyor.scheduler.v1 import messages_pb2 as sched_pb

    await env.registered("shop")

    def job(workflow: str, handler: str) -> sched_pb.Job:
        return sched_pb.Job(
            target=job_pb2.JobTarget(
                workflow=job_pb2.WorkflowTarget(workflow=workflow, handler=handler)
            ),
            queue="shop-sessions",
        )

    for workflow, handler, words in (
        ("nowhere", "poll", "no deployed app defines workflow nowhere"),
        ("shop", "refund", "handler not found: refund (workflow shop defines: charge_order"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await env.scheduler.CreateJob(
                sched_rpc.CreateJobRequest(
                    parent="namespaces/wf", job_id=f"by-hand-{workflow}", job=job(workflow, handler)
                )
            )
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert words in (refused.value.details() or "")
    created = await env.scheduler.CreateJob(
        sched_rpc.CreateJobRequest(
            parent="namespaces/wf", job_id="by-hand-ok", job=job("shop", "poll_orders")
        )
    )
    assert created.job.target.workflow.handler == "poll_orders"
