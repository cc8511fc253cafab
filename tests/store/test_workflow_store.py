"""Conformance of WorkflowStore (services/executor/store/workflow_base.py), its workflows
and sessions: every method, on every backend, through the Protocol alone, with the time
from a manual clock. Handler runs and the mutation ledger: test_workflow_store_runs.py."""

from __future__ import annotations

import uuid
from dataclasses import replace

import pytest

from conveyor_core.clock import ManualClock, to_micros
from conveyor_executor.domain.model import Usage
from conveyor_executor.domain.workflow import (
    HandlerDef,
    HandlerKind,
    Session,
    SessionState,
    WorkflowRecord,
)
from conveyor_executor.errors import SessionNotFound, WorkflowNotFound
from conveyor_executor.store.base import JournalDraft
from conveyor_executor.store.outbox import SqlExecutorOutbox
from conveyor_executor.store.workflow_base import WorkflowStore
from tests.store.journal import journal_types

NS = "conformance"  # rebound per test (conftest's namespace fixture): a module shares one database
HANDLERS = (
    HandlerDef("poll", HandlerKind.PRODUCER, schedule="namespaces/n/schedules/wf-shop-poll"),
    HandlerDef("charge", HandlerKind.CONSUMER, topic="orders", batch=5, has_reconcile=True),
)


def workflow(clock: ManualClock, name: str = "shop") -> WorkflowRecord:
    return WorkflowRecord(
        NS, name, HANDLERS, "2026-12-03", "workflows", 20, 1.5, clock.now(), clock.now()
    )


def session(clock: ManualClock, wf: str = "shop", trigger: str = "poll") -> Session:
    return Session(
        NS, uuid.uuid4().hex, wf, SessionState.RUNNING, trigger, "2026-12-03", clock.now()
    )


def draft(clock: ManualClock, kind: str) -> JournalDraft:
    return JournalDraft(kind, NS, clock.now(), {"workflow": "shop"})


async def finish(
    store: WorkflowStore, clock: ManualClock, started: Session, usage: Usage
) -> Session:
    ended = replace(started, state=SessionState.COMPLETED, usage=usage, ended_at=clock.now())
    return await store.session_finish(ended, ())


# -- workflows ----------------------------------------------------------------------------


async def test_register_stores_the_definition_as_given(
    workflow_store: WorkflowStore, clock: ManualClock
) -> None:
    record = workflow(clock)
    assert await workflow_store.workflow_register(record) == record
    assert await workflow_store.workflow_get(NS, "shop") == record
    unbudgeted = replace(
        workflow(clock, "free"), handlers=(), cost_budget_usd=0.0, iteration_budget=1
    )
    await workflow_store.workflow_register(unbudgeted)
    assert await workflow_store.workflow_get(NS, "free") == unbudgeted


async def test_register_again_updates_the_definition_and_keeps_the_pause(
    workflow_store: WorkflowStore, clock: ManualClock
) -> None:
    first = await workflow_store.workflow_register(workflow(clock))
    clock.advance(10)
    await workflow_store.workflow_set_paused(NS, "shop", True, "ops@x", "incident", clock.now(), ())
    clock.advance(10)
    handlers = (HandlerDef("poll", HandlerKind.PRODUCER),)
    deployed = replace(
        workflow(clock),
        handlers=handlers,
        code_version="2026-12-04",
        queue="wf-2",
        iteration_budget=5,
        cost_budget_usd=9.0,
        registered_at=clock.now(),
    )  # the worker's record of its code says paused=False
    again = await workflow_store.workflow_register(deployed)
    assert (again.handlers, again.code_version, again.queue) == (handlers, "2026-12-04", "wf-2")
    assert (again.iteration_budget, again.cost_budget_usd) == (5, 9.0)
    assert again.updated_at == clock.now() and again.registered_at == first.registered_at
    assert (again.paused, again.paused_by, again.pause_reason) == (True, "ops@x", "incident")
    assert await workflow_store.workflow_get(NS, "shop") == again


async def test_get_of_an_unknown_workflow_raises_not_found(
    workflow_store: WorkflowStore, clock: ManualClock
) -> None:
    with pytest.raises(WorkflowNotFound) as raised:
        await workflow_store.workflow_get(NS, "shop")
    assert raised.value.resource_name == f"namespaces/{NS}/workflows/shop"
    await workflow_store.workflow_register(workflow(clock))
    with pytest.raises(WorkflowNotFound):  # the same name, another namespace
        await workflow_store.workflow_get(f"{NS}-elsewhere", "shop")


async def test_list_holds_the_namespaces_workflows_by_name(
    workflow_store: WorkflowStore, clock: ManualClock
) -> None:
    assert await workflow_store.workflow_list(NS) == []
    for name in ("shop", "billing", "ingest"):
        await workflow_store.workflow_register(workflow(clock, name))
    listed = await workflow_store.workflow_list(NS)
    assert [r.workflow for r in listed] == ["billing", "ingest", "shop"]
    assert listed[2] == await workflow_store.workflow_get(NS, "shop")
    assert await workflow_store.workflow_list(f"{NS}-elsewhere") == []


async def test_set_paused_records_who_and_why_and_resume_clears_them(
    workflow_store: WorkflowStore, clock: ManualClock, executor_outbox: SqlExecutorOutbox
) -> None:
    await workflow_store.workflow_register(workflow(clock))
    clock.advance(5)
    paused = await workflow_store.workflow_set_paused(
        NS, "shop", True, "ops@x", "payments down", clock.now(), (draft(clock, "wf.paused"),)
    )
    assert (paused.paused, paused.paused_by, paused.pause_reason) == (
        True,
        "ops@x",
        "payments down",
    )
    assert paused.updated_at == clock.now()
    assert await workflow_store.workflow_get(NS, "shop") == paused
    clock.advance(5)
    resumed = await workflow_store.workflow_set_paused(
        NS, "shop", False, "ops@y", "fixed", clock.now(), (draft(clock, "wf.resumed"),)
    )
    assert (resumed.paused, resumed.paused_by, resumed.pause_reason) == (False, "", "")
    assert resumed.updated_at == clock.now() and resumed.handlers == HANDLERS
    assert await journal_types(executor_outbox, NS) == ["wf.paused", "wf.resumed"]


async def test_set_paused_of_an_unknown_workflow_raises_not_found_and_journals_nothing(
    workflow_store: WorkflowStore, clock: ManualClock, executor_outbox: SqlExecutorOutbox
) -> None:
    with pytest.raises(WorkflowNotFound):
        await workflow_store.workflow_set_paused(
            NS, "shop", True, "ops@x", "r", clock.now(), (draft(clock, "wf.paused"),)
        )
    assert await journal_types(executor_outbox, NS) == []


# -- sessions -----------------------------------------------------------------------------


async def test_session_start_creates_it_with_its_journal(
    workflow_store: WorkflowStore, clock: ManualClock, executor_outbox: SqlExecutorOutbox
) -> None:
    new = session(clock)
    started = await workflow_store.session_start(new, (draft(clock, "workflow.session.started"),))
    assert started == new and started.state is SessionState.RUNNING
    assert await workflow_store.session_get(NS, new.session_id) == new
    assert await journal_types(executor_outbox, NS) == ["workflow.session.started"]


async def test_session_start_again_returns_the_stored_session_running_again(
    workflow_store: WorkflowStore, clock: ManualClock, executor_outbox: SqlExecutorOutbox
) -> None:
    """A re-leased order starts its session again: the one stored, not the one handed in."""
    first = await workflow_store.session_start(session(clock), ())
    clock.advance(30)
    failed = replace(
        first,
        state=SessionState.FAILED,
        iterations=3,
        handler_runs=4,
        usage=Usage(10, 20, 0.5),
        summary="mutate failed",
        ended_at=clock.now(),
    )
    await workflow_store.session_finish(failed, ())
    clock.advance(30)
    retried = replace(first, trigger="charge", code_version="2026-12-04", started_at=clock.now())
    again = await workflow_store.session_start(retried, (draft(clock, "again"),))
    assert again.state is SessionState.RUNNING and again.ended_at is None
    assert again == replace(failed, state=SessionState.RUNNING, ended_at=None)
    assert await workflow_store.session_get(NS, first.session_id) == again
    assert await journal_types(executor_outbox, NS) == ["again"]


async def test_session_finish_stores_its_end_with_its_journal(
    workflow_store: WorkflowStore, clock: ManualClock, executor_outbox: SqlExecutorOutbox
) -> None:
    started = await workflow_store.session_start(session(clock), ())
    clock.advance(60)
    ended = replace(
        started,
        state=SessionState.COMPLETED_WITH_REMAINING_WORK,
        iterations=20,
        handler_runs=21,
        usage=Usage(100, 50, 1.25),
        follow_up=f"namespaces/{NS}/queues/workflows/workOrders/next",
        summary="budget spent, 3 events left",
        ended_at=clock.now(),
    )
    journal = (draft(clock, "workflow.session.completed_with_remaining_work"),)
    assert await workflow_store.session_finish(ended, journal) == ended
    assert await workflow_store.session_get(NS, started.session_id) == ended
    assert await journal_types(executor_outbox, NS) == [journal[0].type]


async def test_session_finish_of_a_session_never_started_raises_not_found(
    workflow_store: WorkflowStore, clock: ManualClock, executor_outbox: SqlExecutorOutbox
) -> None:
    never = replace(session(clock), state=SessionState.COMPLETED, ended_at=clock.now())
    with pytest.raises(SessionNotFound):
        await workflow_store.session_finish(never, (draft(clock, "workflow.session.completed"),))
    with pytest.raises(SessionNotFound):
        await workflow_store.session_get(NS, never.session_id)
    assert await journal_types(executor_outbox, NS) == []


async def test_session_get_of_an_unknown_session_raises_not_found(
    workflow_store: WorkflowStore, clock: ManualClock
) -> None:
    stored = await workflow_store.session_start(session(clock), ())
    with pytest.raises(SessionNotFound) as raised:
        await workflow_store.session_get(NS, "missing")
    assert raised.value.resource_name == f"namespaces/{NS}/sessions/missing"
    with pytest.raises(SessionNotFound):
        await workflow_store.session_get(f"{NS}-elsewhere", stored.session_id)


async def test_session_list_pages_a_workflows_sessions_newest_first(
    workflow_store: WorkflowStore, clock: ManualClock
) -> None:
    shop = []
    for _ in range(3):
        shop.append(await workflow_store.session_start(session(clock), ()))
        clock.advance(1)
    # Two more at one instant: the id breaks the tie, highest first.
    shop += sorted(
        [await workflow_store.session_start(session(clock), ()) for _ in range(2)],
        key=lambda s: s.session_id,
    )
    other = await workflow_store.session_start(session(clock, wf="billing"), ())
    newest_first = [s.session_id for s in shop[::-1]]
    everything = await workflow_store.session_list(NS, "shop", None, 10)
    assert [s.session_id for s in everything] == newest_first
    first = await workflow_store.session_list(NS, "shop", None, 2)
    cursor = (to_micros(first[-1].started_at), first[-1].session_id)
    rest = await workflow_store.session_list(NS, "shop", cursor, 10)
    assert [s.session_id for s in first + rest] == newest_first
    assert await workflow_store.session_list(NS, "billing", None, 10) == [other]
    assert await workflow_store.session_list(f"{NS}-elsewhere", "shop", None, 10) == []


async def test_workflow_usage_sums_the_workflows_sessions(
    workflow_store: WorkflowStore, clock: ManualClock
) -> None:
    assert await workflow_store.workflow_usage(NS, "shop") == Usage(0, 0, 0.0)
    for usage in (Usage(10, 20, 0.25), Usage(5, 1, 0.5)):
        await finish(
            workflow_store, clock, await workflow_store.session_start(session(clock), ()), usage
        )
    running = await workflow_store.session_start(session(clock), ())  # nothing recorded yet
    await finish(
        workflow_store,
        clock,
        await workflow_store.session_start(session(clock, wf="billing"), ()),
        Usage(1000, 1000, 10.0),
    )
    assert await workflow_store.workflow_usage(NS, "shop") == Usage(15, 21, 0.75)
    await finish(workflow_store, clock, running, Usage(1, 1, 0.25))
    assert await workflow_store.workflow_usage(NS, "shop") == Usage(16, 22, 1.0)
    assert await workflow_store.workflow_usage(f"{NS}-elsewhere", "shop") == Usage(0, 0, 0.0)
