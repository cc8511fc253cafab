"""RunStore's group-committed writes (`run_start_attempts`, `run_finish_attempts`) on every
backend: new runs and later attempts of known runs in one batch, the attempt guard of an
end, and (the PostgreSQL statements find a run by a seek in key order, then its ctid) an
end of an unknown run that leaves its neighbour in key order untouched."""

from __future__ import annotations

import uuid

from conveyor_core.clock import ManualClock
from conveyor_executor.domain.model import AttemptEnd, RunKind, RunOrigin, RunRef, RunState, Usage
from conveyor_executor.store.base import AttemptFinish, AttemptStart, JournalDraft, RunStore
from conveyor_executor.store.outbox import SqlExecutorOutbox


def origin(run: RunRef) -> RunOrigin:
    return RunOrigin(
        work_order=f"namespaces/{run.namespace}/queues/jobs/workOrders/{run.run_id}",
        kind=RunKind.COMMAND,
        job=f"namespaces/{run.namespace}/jobs/nightly",
        job_version=1,
        correlation_id="corr",
    )


def start(run: RunRef, attempt: int, clock: ManualClock) -> AttemptStart:
    draft = JournalDraft("run.started", run.namespace, clock.now(), {"run": run.run_id})
    return AttemptStart(run, origin(run), attempt, "executor-1", clock.now(), (draft,))


def succeeded(run: RunRef, attempt: int, clock: ManualClock, tokens: int = 0) -> AttemptFinish:
    end = AttemptEnd(
        RunState.SUCCEEDED,
        RunState.SUCCEEDED,
        clock.now(),
        work_found=True,
        summary=f"attempt {attempt}",
        usage=Usage(tokens, 0, 0.0),
    )
    return AttemptFinish(run, attempt, end)


def namespace() -> str:
    return f"b{uuid.uuid4().hex[:12]}"


async def test_a_start_batch_creates_new_runs_and_restarts_known_ones(
    run_store: RunStore, clock: ManualClock, executor_outbox: SqlExecutorOutbox
) -> None:
    ns = namespace()
    known, new_a, new_b = (RunRef(ns, str(uuid.uuid4())) for _ in range(3))
    await run_store.run_start_attempts([start(known, 1, clock)])
    failed_end = AttemptEnd(RunState.FAILED, RunState.PENDING, clock.now())
    await run_store.run_finish_attempts([AttemptFinish(known, 1, failed_end)])
    before = await executor_outbox.undelivered_count()
    clock.advance(5)

    batch = [start(new_a, 1, clock), start(known, 2, clock), start(new_b, 1, clock)]
    await run_store.run_start_attempts(batch)

    restarted = await run_store.run_get(known)
    assert restarted.state is RunState.RUNNING and restarted.updated_at == clock.now()
    assert restarted.ended_at is None
    assert [(a.number, a.state) for a in restarted.attempts] == [
        (1, RunState.FAILED),
        (2, RunState.RUNNING),
    ]
    for run in (new_a, new_b):
        fresh = await run_store.run_get(run)
        assert fresh.state is RunState.RUNNING
        assert fresh.created_at == clock.now()
        assert [a.number for a in fresh.attempts] == [1]
    assert await executor_outbox.undelivered_count() == before + 3


async def test_a_finish_batch_moves_each_run_only_from_its_latest_attempt(
    run_store: RunStore, clock: ManualClock
) -> None:
    ns = namespace()
    retried, single = RunRef(ns, str(uuid.uuid4())), RunRef(ns, str(uuid.uuid4()))
    await run_store.run_start_attempts([start(retried, 1, clock), start(single, 1, clock)])
    await run_store.run_start_attempts([start(retried, 2, clock)])  # attempt 1's lease lost
    clock.advance(2)

    # Attempt 1's late report and attempt 2's success in one batch, with another run.
    await run_store.run_finish_attempts(
        [
            succeeded(retried, 1, clock, 7),
            succeeded(retried, 2, clock, 5),
            succeeded(single, 1, clock),
        ]
    )

    run = await run_store.run_get(retried)
    assert run.state is RunState.SUCCEEDED and run.summary == "attempt 2"
    assert run.ended_at == clock.now()
    assert run.usage.input_tokens == 5  # only the latest attempt's end reached the run
    assert [(a.number, a.state) for a in run.attempts] == [
        (1, RunState.SUCCEEDED),
        (2, RunState.SUCCEEDED),
    ]
    assert (await run_store.run_get(single)).state is RunState.SUCCEEDED


async def test_an_end_of_an_unknown_run_changes_no_other_run(
    run_store: RunStore, clock: ManualClock
) -> None:
    ns = namespace()
    # Its key sorts just before the neighbour's: a seek in key order lands on the neighbour.
    neighbour = RunRef(ns, "run-b")
    await run_store.run_start_attempts([start(neighbour, 1, clock)])

    await run_store.run_finish_attempts([succeeded(RunRef(ns, "run-a"), 1, clock)])

    untouched = await run_store.run_get(neighbour)
    assert untouched.state is RunState.RUNNING and untouched.summary == ""
    assert untouched.ended_at is None
