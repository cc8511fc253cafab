"""Conformance of WorkflowStore (services/executor/store/workflow_base.py), its handler
runs and mutation ledger: every method, on every backend, through the Protocol alone,
with the time from a manual clock. The phase machine is docs/workflows.md's; workflows
and sessions: test_workflow_store.py."""

from __future__ import annotations

import math
import uuid
from dataclasses import replace

import pytest

from conveyor_core.clock import ManualClock, to_micros
from conveyor_executor.domain.failure import ClassifiedError, ErrorType
from conveyor_executor.domain.model import Usage
from conveyor_executor.domain.workflow import (
    Emit,
    HandlerKind,
    HandlerRun,
    HeldEvent,
    Mutation,
    MutationState,
    Phase,
    Resolution,
    sources_of,
)
from conveyor_executor.errors import HandlerRunNotFound, PhaseConflict
from conveyor_executor.store.base import JournalDraft
from conveyor_executor.store.outbox import SqlExecutorOutbox
from conveyor_executor.store.workflow_base import (
    Advance,
    HandlerRunListParams,
    MutationListParams,
    WorkflowStore,
)
from tests.store.journal import journal_types

NS = "conformance"  # rebound per test (conftest's namespace fixture): a module shares one database
EVENT = HeldEvent("orders", 7, "order-7", "Order 7 from Ada", {"id": 7, "total": 12.5})
TIMEOUT = ClassifiedError(ErrorType.INTERNAL, "mutate of charge timed out", True, {})


def handler_run(
    clock: ManualClock,
    kind: HandlerKind = HandlerKind.CONSUMER,
    phase: Phase = Phase.PENDING,
    wf: str = "shop",
    session_id: str = "s1",
) -> HandlerRun:
    handler, topic = ("charge", "orders") if kind is HandlerKind.CONSUMER else ("poll", "")
    return HandlerRun(
        NS,
        uuid.uuid4().hex,
        session_id,
        wf,
        handler,
        kind,
        phase,
        "workflows",
        "2026-12-03",
        clock.now(),
        clock.now(),
        topic=topic,
    )


def draft(clock: ManualClock, kind: str) -> JournalDraft:
    return JournalDraft(kind, NS, clock.now(), {"workflow": "shop"})


def ledger(clock: ManualClock, run: HandlerRun, state: MutationState) -> Mutation:
    return Mutation(
        NS, run.handler_run_id, run.workflow, run.handler, state, 1, clock.now(), clock.now()
    )


async def move(
    store: WorkflowStore,
    clock: ManualClock,
    run: HandlerRun,
    phase: Phase,
    mutation: Mutation | None = None,
    *journal: str,
    **changes: object,
) -> HandlerRun:
    """One checkpoint as the driver writes it: from the phases `phase` may follow."""
    return await store.handler_run_advance(
        Advance(
            NS,
            run.handler_run_id,
            sources_of(phase),
            phase,
            clock.now(),
            changes,
            mutation,
            tuple(draft(clock, j) for j in journal),
            revision=run.revision,
            base=run,
        )
    )


async def prepared(
    store: WorkflowStore, clock: ManualClock, wf: str = "shop", session_id: str = "s1"
) -> HandlerRun:
    """A consumer run created in PREPARING and checkpointed PREPARED."""
    new = handler_run(clock, phase=Phase.PREPARING, wf=wf, session_id=session_id)
    run = await store.handler_run_create(new, ())
    return await move(store, clock, run, Phase.PREPARED, events=(EVENT,), prepared={"n": 1})


# -- create and get -----------------------------------------------------------------------


async def test_create_stores_the_run_as_given_with_its_journal(
    workflow_store: WorkflowStore, clock: ManualClock, executor_outbox: SqlExecutorOutbox
) -> None:
    new = handler_run(clock, phase=Phase.PREPARING)
    journal = (
        draft(clock, "workflow.handler_run.pending"),
        draft(clock, "workflow.handler_run.preparing"),
    )
    created = await workflow_store.handler_run_create(new, journal)
    assert created == new and created.revision == 0 and created.ended_at is None
    assert await workflow_store.handler_run_get(NS, new.handler_run_id) == new
    assert await journal_types(executor_outbox, NS) == [d.type for d in journal]
    producer = handler_run(clock, HandlerKind.PRODUCER)
    await workflow_store.handler_run_create(producer, ())
    assert await workflow_store.handler_run_get(NS, producer.handler_run_id) == producer


async def test_create_again_with_the_same_run_id_returns_the_stored_run(
    workflow_store: WorkflowStore, clock: ManualClock, executor_outbox: SqlExecutorOutbox
) -> None:
    """Idempotent per run id: a retried create neither duplicates nor journals twice."""
    first = handler_run(clock)
    await workflow_store.handler_run_create(first, (draft(clock, "workflow.handler_run.pending"),))
    moved = await move(workflow_store, clock, first, Phase.PREPARING)
    clock.advance(5)
    retried = replace(first, session_id="s2", created_at=clock.now(), updated_at=clock.now())
    again = await workflow_store.handler_run_create(
        retried, (draft(clock, "workflow.handler_run.pending"),)
    )
    assert again == moved and again.phase is Phase.PREPARING  # not reset to PENDING
    listed = await workflow_store.handler_run_list(HandlerRunListParams(NS))
    assert [r.handler_run_id for r in listed] == [first.handler_run_id]
    assert await journal_types(executor_outbox, NS) == ["workflow.handler_run.pending"]


async def test_get_of_an_unknown_run_raises_not_found(
    workflow_store: WorkflowStore, clock: ManualClock
) -> None:
    stored = await workflow_store.handler_run_create(handler_run(clock), ())
    with pytest.raises(HandlerRunNotFound) as raised:
        await workflow_store.handler_run_get(NS, "missing")
    assert raised.value.resource_name == f"namespaces/{NS}/handlerRuns/missing"
    with pytest.raises(HandlerRunNotFound):
        await workflow_store.handler_run_get(f"{NS}-elsewhere", stored.handler_run_id)


# -- advance ------------------------------------------------------------------------------


async def test_advance_moves_the_phase_with_its_changes_and_bumps_the_revision(
    workflow_store: WorkflowStore, clock: ManualClock, executor_outbox: SqlExecutorOutbox
) -> None:
    run = await workflow_store.handler_run_create(handler_run(clock, phase=Phase.PREPARING), ())
    clock.advance(2)
    held = await move(
        workflow_store,
        clock,
        run,
        Phase.PREPARED,
        None,
        "workflow.handler_run.prepared",
        events=(EVENT,),
        prepared={"order": {"id": 7}, "charged": 0},
        state_version=4,
        usage=Usage(10, 5, 0.25),
        session_id="s2",
        code_version="2026-12-04",
    )
    assert held.phase is Phase.PREPARED and held.revision == run.revision + 1
    assert (held.events, held.prepared, held.state_version) == (
        (EVENT,),
        {"order": {"id": 7}, "charged": 0},
        4,
    )
    assert (held.session_id, held.code_version) == ("s2", "2026-12-04")
    assert held.usage == Usage(10, 5, 0.25) and held.updated_at == clock.now()
    assert held.created_at == run.created_at and held.ended_at is None
    assert await workflow_store.handler_run_get(NS, run.handler_run_id) == held
    clock.advance(2)
    mutating = await move(workflow_store, clock, held, Phase.MUTATING, usage=Usage(12, 6, 0.5))
    assert mutating.usage == Usage(12, 6, 0.5)  # the run's total as handed in, not added
    assert mutating.events == (EVENT,) and mutating.revision == held.revision + 1
    assert await journal_types(executor_outbox, NS) == ["workflow.handler_run.prepared"]


async def test_advance_to_a_terminal_phase_records_its_end(
    workflow_store: WorkflowStore, clock: ManualClock
) -> None:
    run = await workflow_store.handler_run_create(handler_run(clock, HandlerKind.PRODUCER), ())
    executing = await move(workflow_store, clock, run, Phase.EXECUTING)
    clock.advance(3)
    emit = Emit(
        False,
        {"after": 7},
        ({"topic": "orders", "message_id": "order-7", "title": "Order 7", "payload": {"id": 7}},),
    )
    committed = await move(
        workflow_store, clock, executing, Phase.COMMITTED, emit=emit, events_published=1
    )
    assert committed.phase is Phase.COMMITTED and committed.ended_at == clock.now()
    assert (committed.emit, committed.events_published) == (emit, 1)
    failed_run = await prepared(workflow_store, clock)
    clock.advance(3)
    failed = await move(workflow_store, clock, failed_run, Phase.FAILED, error=TIMEOUT)
    assert failed.ended_at == clock.now() and failed.error == TIMEOUT
    assert await workflow_store.handler_run_get(NS, failed.handler_run_id) == failed


async def test_advance_from_a_phase_not_expected_is_refused_and_changes_nothing(
    workflow_store: WorkflowStore, clock: ManualClock, executor_outbox: SqlExecutorOutbox
) -> None:
    run = await prepared(workflow_store, clock)
    clock.advance(1)
    with pytest.raises(PhaseConflict) as raised:  # MUTATED comes from MUTATING or SUSPENDED
        await move(
            workflow_store,
            clock,
            run,
            Phase.MUTATED,
            ledger(clock, run, MutationState.APPLIED),
            "workflow.handler_run.mutated",
            mutation_result={"kind": "applied", "value": 1},
        )
    assert raised.value.phase == Phase.PREPARED.value
    assert await workflow_store.handler_run_get(NS, run.handler_run_id) == run
    assert await workflow_store.mutation_get(NS, run.handler_run_id) is None
    assert await journal_types(executor_outbox, NS) == []
    ended = await move(workflow_store, clock, run, Phase.FAILED, error=TIMEOUT)
    with pytest.raises(PhaseConflict):  # an ended run moves no more
        await move(workflow_store, clock, ended, Phase.PREPARED)


async def test_advance_with_a_stale_revision_is_refused(
    workflow_store: WorkflowStore, clock: ManualClock
) -> None:
    """Two drivers read the run at one revision: the first to write wins, even when the
    second's move is allowed from the phase the run is in now."""
    run = await prepared(workflow_store, clock)
    suspended = await move(
        workflow_store,
        clock,
        await move(workflow_store, clock, run, Phase.MUTATING),
        Phase.SUSPENDED,
        prompt="check the charge",
    )
    other_reader = suspended
    resolved = await move(workflow_store, clock, suspended, Phase.PREPARED, prompt="")
    again = await move(workflow_store, clock, resolved, Phase.MUTATING)
    with pytest.raises(PhaseConflict) as raised:  # MUTATING may go to PREPARED: not stale
        await move(workflow_store, clock, other_reader, Phase.PREPARED)
    assert raised.value.phase == Phase.MUTATING.value
    assert await workflow_store.handler_run_get(NS, run.handler_run_id) == again
    unguarded = await workflow_store.handler_run_advance(
        Advance(NS, run.handler_run_id, (Phase.MUTATING,), Phase.MUTATED, clock.now())
    )  # revision None: any
    assert unguarded.phase is Phase.MUTATED and unguarded.revision == again.revision + 1


async def test_advance_of_an_unknown_run_raises_not_found(
    workflow_store: WorkflowStore, clock: ManualClock, executor_outbox: SqlExecutorOutbox
) -> None:
    with pytest.raises(HandlerRunNotFound):
        await workflow_store.handler_run_advance(
            Advance(
                NS,
                "missing",
                (Phase.PENDING,),
                Phase.EXECUTING,
                clock.now(),
                journal=(draft(clock, "workflow.handler_run.executing"),),
            )
        )
    assert await journal_types(executor_outbox, NS) == []


# -- the mutation ledger ------------------------------------------------------------------


async def test_the_mutating_advance_writes_the_in_flight_mutation_with_it(
    workflow_store: WorkflowStore, clock: ManualClock, executor_outbox: SqlExecutorOutbox
) -> None:
    run = await prepared(workflow_store, clock)
    assert await workflow_store.mutation_get(NS, run.handler_run_id) is None
    clock.advance(1)
    in_flight = ledger(clock, run, MutationState.IN_FLIGHT)
    mutating = await move(
        workflow_store,
        clock,
        run,
        Phase.MUTATING,
        in_flight,
        "workflow.handler_run.mutating",
        "workflow.mutation.in_flight",
    )
    assert mutating.phase is Phase.MUTATING
    assert await workflow_store.mutation_get(NS, run.handler_run_id) == in_flight
    assert await journal_types(executor_outbox, NS) == [
        "workflow.handler_run.mutating",
        "workflow.mutation.in_flight",
    ]


async def test_an_unwritable_mutation_undoes_the_phase_change_with_it(
    workflow_store: WorkflowStore, clock: ManualClock, executor_outbox: SqlExecutorOutbox
) -> None:
    """One transaction: a mutation the store cannot write (a NaN result) leaves the run
    where it was, its ledger row as it was and no journal."""
    held = await prepared(workflow_store, clock)
    in_flight = ledger(clock, held, MutationState.IN_FLIGHT)
    run = await move(workflow_store, clock, held, Phase.MUTATING, in_flight)
    with pytest.raises(ValueError):
        await move(
            workflow_store,
            clock,
            run,
            Phase.MUTATED,
            replace(ledger(clock, run, MutationState.APPLIED), result=math.nan),
            "workflow.handler_run.mutated",
        )
    assert await workflow_store.handler_run_get(NS, run.handler_run_id) == run
    assert await workflow_store.mutation_get(NS, run.handler_run_id) == in_flight
    assert await journal_types(executor_outbox, NS) == []


async def test_each_advance_replaces_the_runs_one_mutation(
    workflow_store: WorkflowStore, clock: ManualClock
) -> None:
    """Keyed by the run: IN_FLIGHT -> INDETERMINATE (SUSPENDED) -> a person's FAILED ->
    IN_FLIGHT again (attempt 2) -> APPLIED, one row all along."""
    run = await prepared(workflow_store, clock)
    in_flight = ledger(clock, run, MutationState.IN_FLIGHT)
    run = await move(workflow_store, clock, run, Phase.MUTATING, in_flight)
    clock.advance(30)
    unknown = replace(
        in_flight,
        state=MutationState.INDETERMINATE,
        error=TIMEOUT,
        reconciled="unknown",
        updated_at=clock.now(),
    )
    run = await move(workflow_store, clock, run, Phase.SUSPENDED, unknown, prompt="check it")
    assert await workflow_store.mutation_get(NS, run.handler_run_id) == unknown
    clock.advance(30)
    decided = replace(
        unknown,
        state=MutationState.FAILED,
        resolution=Resolution.FAILED,
        resolved_by="ops@x",
        resolution_reason="no charge at the bank",
        resolved_at=clock.now(),
        updated_at=clock.now(),
        ended_at=clock.now(),
    )
    run = await move(workflow_store, clock, run, Phase.PREPARED, decided, prompt="")
    assert await workflow_store.mutation_get(NS, run.handler_run_id) == decided
    retry = replace(decided, state=MutationState.IN_FLIGHT, attempts=2, error=None, ended_at=None)
    run = await move(workflow_store, clock, run, Phase.MUTATING, retry)
    applied = replace(
        retry, state=MutationState.APPLIED, result={"charge": "ch_1"}, ended_at=clock.now()
    )
    run = await move(
        workflow_store,
        clock,
        run,
        Phase.MUTATED,
        applied,
        mutation_result={"kind": "applied", "value": {"charge": "ch_1"}},
    )
    assert await workflow_store.mutation_get(NS, run.handler_run_id) == applied
    assert run.mutation_result == {"kind": "applied", "value": {"charge": "ch_1"}}
    assert await workflow_store.mutation_list(MutationListParams(NS)) == [applied]


async def test_mutation_get_of_a_run_without_one_is_none(
    workflow_store: WorkflowStore, clock: ManualClock
) -> None:
    producer = await workflow_store.handler_run_create(handler_run(clock, HandlerKind.PRODUCER), ())
    assert await workflow_store.mutation_get(NS, producer.handler_run_id) is None
    assert await workflow_store.mutation_get(NS, "missing") is None
    run = await prepared(workflow_store, clock)
    await move(
        workflow_store, clock, run, Phase.MUTATING, ledger(clock, run, MutationState.IN_FLIGHT)
    )
    assert await workflow_store.mutation_get(f"{NS}-elsewhere", run.handler_run_id) is None


# -- lists --------------------------------------------------------------------------------


async def test_handler_run_list_filters_and_pages_newest_first(
    workflow_store: WorkflowStore, clock: ManualClock
) -> None:
    runs: list[HandlerRun] = []
    for i in range(4):
        new = handler_run(clock, wf="shop" if i < 3 else "billing", session_id=f"s{i % 2}")
        runs.append(await workflow_store.handler_run_create(new, ()))
        clock.advance(1)
    tied = sorted(
        [
            await workflow_store.handler_run_create(handler_run(clock, session_id="s9"), ())
            for _ in range(2)
        ],
        key=lambda r: r.handler_run_id,
    )  # one instant: the id breaks the tie
    runs += tied
    await move(workflow_store, clock, runs[0], Phase.PREPARING)
    ids = [r.handler_run_id for r in runs]

    everything = await workflow_store.handler_run_list(HandlerRunListParams(NS))
    assert [r.handler_run_id for r in everything] == ids[::-1]
    first = await workflow_store.handler_run_list(HandlerRunListParams(NS, limit=3))
    cursor = (to_micros(first[-1].created_at), first[-1].handler_run_id)
    rest = await workflow_store.handler_run_list(HandlerRunListParams(NS, after=cursor))
    assert [r.handler_run_id for r in first + rest] == ids[::-1]
    billing = await workflow_store.handler_run_list(HandlerRunListParams(NS, "billing"))
    assert [r.handler_run_id for r in billing] == [ids[3]]
    preparing = await workflow_store.handler_run_list(
        HandlerRunListParams(NS, "shop", (Phase.PREPARING, Phase.PREPARED))
    )
    assert [(r.handler_run_id, r.phase) for r in preparing] == [(ids[0], Phase.PREPARING)]
    in_s1 = await workflow_store.handler_run_list(HandlerRunListParams(NS, session_id="s1"))
    assert {r.handler_run_id for r in in_s1} == {ids[1], ids[3]}
    assert await workflow_store.handler_run_list(HandlerRunListParams(f"{NS}-elsewhere")) == []


async def test_mutation_list_filters_and_pages_newest_first(
    workflow_store: WorkflowStore, clock: ManualClock
) -> None:
    ledgered: list[Mutation] = []
    for i in range(4):
        run = await prepared(workflow_store, clock, wf="shop" if i < 3 else "billing")
        mutation = ledger(clock, run, MutationState.IN_FLIGHT)
        run = await move(workflow_store, clock, run, Phase.MUTATING, mutation)
        if i == 1:
            mutation = replace(mutation, state=MutationState.NONE, ended_at=clock.now())
            await move(workflow_store, clock, run, Phase.MUTATED, mutation)
        ledgered.append(mutation)
        clock.advance(1)
    await prepared(workflow_store, clock)  # PREPARED: no ledger row yet
    newest_first = ledgered[::-1]
    assert await workflow_store.mutation_list(MutationListParams(NS)) == newest_first
    first = await workflow_store.mutation_list(MutationListParams(NS, limit=2))
    cursor = (to_micros(first[-1].started_at), first[-1].handler_run_id)
    rest = await workflow_store.mutation_list(MutationListParams(NS, after=cursor))
    assert first + rest == newest_first
    shop = await workflow_store.mutation_list(MutationListParams(NS, "shop"))
    assert shop == newest_first[1:]
    in_flight = await workflow_store.mutation_list(
        MutationListParams(NS, "shop", (MutationState.IN_FLIGHT, MutationState.INDETERMINATE))
    )
    assert in_flight == [ledgered[2], ledgered[0]]
    assert await workflow_store.mutation_list(MutationListParams(f"{NS}-elsewhere")) == []


async def test_advance_given_the_run_read_returns_what_reading_it_back_gives(
    workflow_store: WorkflowStore, clock: ManualClock
) -> None:
    """With `base` (the run as read at `revision`) the store builds the moved run from the
    caller's values instead of reading the row back: it must equal the stored row, also
    for what storing normalises (an error's message cut at its limit)."""
    run = await prepared(workflow_store, clock)
    clock.advance(1)
    long_error = ClassifiedError(ErrorType.HANDLER_LOGIC, "x" * 5000, False, {"line": "7"})
    failed = await move(workflow_store, clock, run, Phase.FAILED, error=long_error, state_version=3)
    assert failed.error is not None and len(failed.error.message) == 4096
    assert await workflow_store.handler_run_get(NS, run.handler_run_id) == failed
    stale = await prepared(workflow_store, clock)
    moved = await move(workflow_store, clock, stale, Phase.MUTATING)
    # No revision guarded: `base` may not be the run moved, so the row is read back.
    unguarded = await workflow_store.handler_run_advance(
        Advance(
            NS,
            stale.handler_run_id,
            (Phase.MUTATING,),
            Phase.MUTATED,
            clock.now(),
            {"mutation_result": {"kind": "none", "value": None}},
            base=stale,
        )
    )
    assert unguarded.revision == moved.revision + 1 and unguarded.events == (EVENT,)
    assert await workflow_store.handler_run_get(NS, stale.handler_run_id) == unguarded
