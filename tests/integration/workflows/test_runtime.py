"""The workflow runtime end to end: producer -> events -> consumers -> commits, the ledger,
reconcile, suspension and resolution, budgets and follow-up sessions. Both backends."""

from __future__ import annotations

import json

import grpc
import pytest

from conveyor.events.v1 import service_pb2 as ev_rpc
from conveyor.events.v1 import service_pb2_grpc as ev_grpc
from conveyor.executor.v1 import workflow_pb2 as wf_pb
from conveyor.queue.v1 import service_pb2 as q_rpc
from conveyor.queue.v1 import service_pb2_grpc as q_grpc
from conveyor_core.grpc import create_channel
from conveyor_executor.workflow.peers import state_name
from tests.helpers.e2e import eventually
from tests.integration.workflows.conftest import Env

P = wf_pb


async def _committed(env: Env, workflow: str, handler: str, count: int) -> bool:
    runs = await env.runs(workflow, P.HANDLER_PHASE_COMMITTED)
    return sum(r.handler == handler for r in runs) >= count


async def test_orders_flow_from_the_producer_through_both_consumers(env: Env) -> None:
    env.shop.add_order("ada", 10)
    env.shop.add_order("bob", 20)
    await env.trigger("shop", "poll_orders")
    await eventually(
        lambda: _committed(env, "shop", "charge_order", 2),
        "lambda: _committed(env, shop, charge_order, 2)",
        60,
    )
    await eventually(
        lambda: _committed(env, "shop", "notify", 1), "lambda: _committed(env, shop, notify, 1)", 60
    )
    assert [c["order_id"] for c in env.shop.charges] == [1, 2], "each order charged once"
    runs = await env.runs("shop")
    producer = next(r for r in runs if r.handler == "poll_orders")
    assert producer.phase == P.HANDLER_PHASE_COMMITTED and producer.events_published == 2
    assert producer.code_version == "test-1"
    charge = next(r for r in runs if r.handler == "charge_order")
    assert charge.mutation_result.kind == "applied"
    assert json.loads(charge.mutation_result.value_json)["charge_id"].startswith("ch_")
    assert charge.events[0].title.startswith("Order ")
    detail = await env.workflows.GetHandlerRun(P.GetHandlerRunRequest(name=charge.name))
    assert detail.mutation.state == P.MUTATION_STATE_APPLIED and detail.mutation.attempts == 1
    sessions = await env.sessions("shop")
    assert sessions and all(
        s.state == P.SESSION_STATE_COMPLETED for s in sessions if s.end_time.seconds
    )
    workflow = (
        await env.workflows.GetWorkflow(P.GetWorkflowRequest(name="namespaces/wf/workflows/shop"))
    ).workflow
    assert {h.handler for h in workflow.handlers} == {"poll_orders", "charge_order", "notify"}
    assert workflow.code_version == "test-1"


async def test_an_applied_then_cut_charge_is_reconciled_as_applied_never_charged_twice(
    env: Env,
) -> None:
    order = env.shop.add_order("cy", 30, mode="apply_then_cut")
    await env.trigger("shop", "poll_orders")
    await eventually(
        lambda: _committed(env, "shop", "charge_order", 1),
        "lambda: _committed(env, shop, charge_order, 1)",
        60,
    )
    assert len(env.shop.charges_of(order["id"])) == 1
    run = next(r for r in await env.runs("shop") if r.handler == "charge_order")
    detail = await env.workflows.GetHandlerRun(P.GetHandlerRunRequest(name=run.name))
    assert detail.mutation.state == P.MUTATION_STATE_APPLIED
    assert detail.mutation.reconciled == "applied"
    assert detail.handler_run.mutation_result.kind == "applied"


async def test_a_cut_charge_reconciled_as_failed_is_mutated_again(env: Env) -> None:
    order = env.shop.add_order("dee", 40, mode="cut_once")
    await env.trigger("shop", "poll_orders")
    await eventually(
        lambda: _committed(env, "shop", "charge_order", 1),
        "lambda: _committed(env, shop, charge_order, 1)",
        60,
    )
    assert len(env.shop.charges_of(order["id"])) == 1
    run = next(r for r in await env.runs("shop") if r.handler == "charge_order")
    detail = await env.workflows.GetHandlerRun(P.GetHandlerRunRequest(name=run.name))
    assert detail.mutation.attempts == 2 and detail.mutation.state == P.MUTATION_STATE_APPLIED


@pytest.mark.parametrize("choice", ["applied", "failed", "skip"])
async def test_an_unknown_outcome_suspends_the_run_until_a_person_resolves_it(
    env: Env, choice: str
) -> None:
    # Charged, the answer lost, and the lookup fails too: reconcile cannot tell.
    order = env.shop.add_order("eve", 50, mode="apply_then_cut_unknown")
    await env.trigger("shop", "poll_orders")

    async def one_blocked() -> wf_pb.HandlerRun | None:
        runs = await env.runs("shop", P.HANDLER_PHASE_SUSPENDED)
        return runs[0] if runs else None

    blocked = await eventually(one_blocked, "a suspended charge run", 60)
    assert blocked is not None
    assert "Order" in blocked.prompt and "APPLIED" in blocked.prompt
    detail = await env.workflows.GetHandlerRun(P.GetHandlerRunRequest(name=blocked.name))
    assert detail.mutation.state == P.MUTATION_STATE_INDETERMINATE
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await env.workflows.ResolveMutation(
            P.ResolveMutationRequest(
                name=blocked.name, resolution=P.RESOLUTION_SKIP, resolved_by="ops"
            )
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # no reason
    env.shop.modes[str(order["id"])] = ""
    resolution = {
        "applied": P.RESOLUTION_APPLIED,
        "failed": P.RESOLUTION_FAILED,
        "skip": P.RESOLUTION_SKIP,
    }[choice]
    reply = await env.workflows.ResolveMutation(
        P.ResolveMutationRequest(
            name=blocked.name,
            resolution=resolution,
            reason="checked the payment dashboard",
            resolved_by="ops@example.com",
            result_json='{"charge_id": "ch_manual"}' if choice == "applied" else "",
        )
    )
    assert reply.mutation.resolved_by == "ops@example.com"
    await eventually(
        lambda: _committed(env, "shop", "charge_order", 1),
        "lambda: _committed(env, shop, charge_order, 1)",
        60,
    )
    detail = await env.workflows.GetHandlerRun(P.GetHandlerRunRequest(name=blocked.name))
    expected = {"applied": "applied", "failed": "applied", "skip": "skipped"}[choice]
    assert detail.handler_run.mutation_result.kind == expected
    assert len(env.shop.charges_of(order["id"])) == (2 if choice == "failed" else 1)


async def test_a_budget_stop_ends_with_remaining_work_and_a_follow_up_session(env: Env) -> None:
    await env.trigger("tight", "burst")
    await eventually(
        lambda: _committed(env, "tight", "work", 5), "lambda: _committed(env, tight, work, 5)", 60
    )
    sessions = await env.sessions("tight")
    states = [s.state for s in sessions]
    assert P.SESSION_STATE_COMPLETED_WITH_REMAINING_WORK in states
    first = next(s for s in sessions if s.trigger == "burst")
    assert first.state == P.SESSION_STATE_COMPLETED_WITH_REMAINING_WORK
    assert first.iterations == 2 and first.follow_up
    assert first.usage.cost_usd == pytest.approx(0.02)

    # Each follow-up takes what is left; the chain ends with a session that took the rest.
    async def chain_ended() -> bool:
        latest = (await env.sessions("tight"))[0]
        return latest.state == P.SESSION_STATE_COMPLETED and not latest.follow_up

    await eventually(chain_ended, "the last follow-up session completed", 60)
    # The schedule's first slot may fire too (at registration): 5 events per producer run.
    all_sessions = await env.sessions("tight")
    bursts = sum(r.handler == "burst" for r in await env.runs("tight", P.HANDLER_PHASE_COMMITTED))
    works = await env.runs("tight", P.HANDLER_PHASE_COMMITTED)
    assert (
        sum(s.iterations for s in all_sessions)
        == 5 * bursts
        == sum(r.handler == "work" for r in works)
    )
    assert all(s.iterations <= 2 for s in all_sessions), "the budget bounds every session"
    # Usage is summed per handler run, per session and per workflow.
    work_runs = [r for r in works if r.handler == "work"]
    assert all(r.usage.cost_usd == pytest.approx(0.01) for r in work_runs)
    workflow = (
        await env.workflows.GetWorkflow(P.GetWorkflowRequest(name="namespaces/wf/workflows/tight"))
    ).workflow
    assert workflow.usage.cost_usd == pytest.approx(0.01 * len(work_runs))
    assert workflow.usage.input_tokens == 10 * len(work_runs)


async def test_a_producer_returning_a_wrong_type_or_an_oversize_event_fails_clearly(
    env: Env,
) -> None:
    await env.trigger("bad", "wrong_type")
    await env.trigger("bad", "too_big")

    async def both_failed() -> list[wf_pb.HandlerRun]:
        return await env.runs("bad", P.HANDLER_PHASE_FAILED)

    await eventually(lambda: _count(both_failed, 2), "lambda: _count(both_failed, 2)", 60)
    failures = {r.handler: r.failure.message for r in await both_failed()}
    assert "returned dict, not conveyor.Produce" in failures["wrong_type"]
    assert (
        "above the limit of 262144 bytes (CONVEYOR_EXECUTOR_MAX_EVENT_BYTES)" in failures["too_big"]
    )


async def _count(fetch, n: int) -> bool:  # type: ignore[no-untyped-def]
    return len({r.handler for r in await fetch()}) >= n


async def test_oversize_state_or_prepared_data_fails_clearly_and_the_event_stays_pending(
    env: Env,
) -> None:
    await env.trigger("bad", "state_too_big")
    await env.trigger("bad", "fill_hoard")

    async def failed() -> list[wf_pb.HandlerRun]:
        return await env.runs("bad", P.HANDLER_PHASE_FAILED)

    await eventually(
        lambda: _handlers(failed, {"state_too_big", "hoarder"}), "both runs FAILED", 60
    )
    failures = {r.handler: r.failure.message for r in await failed()}
    assert (
        "above the limit of 1048576 bytes (CONVEYOR_EXECUTOR_MAX_STATE_BYTES)"
        in (failures["state_too_big"])
    )
    assert (
        "above the limit of 1048576 bytes (CONVEYOR_EXECUTOR_MAX_PREPARED_BYTES)"
        in (failures["hoarder"])
    )
    # Nothing lost: the producer's state kept no version, the hoarded event went back to
    # pending (released by the failed run), and mutate never ran.
    async with create_channel(env.address) as channel:
        events = ev_grpc.EventStoreServiceStub(channel)
        stats = (
            await events.GetTopicStats(
                ev_rpc.GetTopicStatsRequest(name="namespaces/wf/topics/hoard")
            )
        ).stats
        assert (stats.pending, stats.reserved, stats.consumed) == (1, 0, 0)
        state = await events.GetState(
            ev_rpc.GetStateRequest(name=state_name("wf", "bad", "state_too_big"))
        )
        assert state.state.version == 0
    committed = await env.runs("bad", P.HANDLER_PHASE_COMMITTED)
    assert not [r for r in committed if r.handler in {"state_too_big", "hoarder"}]


async def _handlers(fetch, wanted: set[str]) -> bool:  # type: ignore[no-untyped-def]
    return wanted <= {r.handler for r in await fetch()}


async def test_a_session_stopped_inside_a_handler_call_ends_failed_not_running(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelled past the abort grace period while its producer runs, the session's task
    is cancelled: the session still records its end (it never reads RUNNING forever)."""
    monkeypatch.setenv("CONVEYOR_TEST_STUCK_SECONDS", "3600")
    await env.registered("stuck")
    await env.trigger("stuck", "hang")

    async def running() -> wf_pb.Session | None:
        found = [s for s in await env.sessions("stuck") if s.state == P.SESSION_STATE_RUNNING]
        return found[0] if found else None

    session = await eventually(running, "a session of `stuck` running")
    order = f"namespaces/wf/queues/stuck-sessions/workOrders/{session.name.rsplit('/', 1)[-1]}"
    async with create_channel(env.address) as channel:
        queue = q_grpc.WorkOrderQueueServiceStub(channel)
        await queue.CancelWorkOrder(q_rpc.CancelWorkOrderRequest(name=order, reason="test"))

    async def ended() -> wf_pb.Session | None:
        now = {s.name: s for s in await env.sessions("stuck")}[session.name]
        return now if now.state != P.SESSION_STATE_RUNNING else None

    done = await eventually(ended, "the cancelled session's end recorded")
    assert done.state == P.SESSION_STATE_FAILED
    assert done.summary.startswith("session stopped:") and "cancelled" in done.summary
    assert done.end_time.ToNanoseconds() >= done.start_time.ToNanoseconds()
