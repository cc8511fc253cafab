"""Conformance of RunStore (services/executor/store/base.py): every method, on every
backend, through the Protocol alone, with the time from a manual clock."""

from __future__ import annotations

import uuid

import pytest

from conveyor_core.clock import ManualClock
from conveyor_executor.domain.failure import ClassifiedError, ErrorType
from conveyor_executor.domain.model import (
    AttemptEnd,
    OutputRef,
    Progress,
    RunKind,
    RunOrigin,
    RunRef,
    RunState,
    Usage,
)
from conveyor_executor.errors import OutputNotFound, RunNotFound
from conveyor_executor.runners.context import Step, StepKind, StepStatus
from conveyor_executor.store.base import (
    AttemptFinish,
    AttemptStart,
    JournalDraft,
    RunListCursor,
    RunListParams,
    RunStore,
)
from conveyor_executor.store.outbox import SqlExecutorOutbox

NS = "conformance"  # rebound per test (conftest's namespace fixture): a module shares one database
NETWORK = ClassifiedError(ErrorType.NETWORK, "connection refused", True, {"endpoint": "api"})


def ref() -> RunRef:
    return RunRef(NS, str(uuid.uuid4()))


def origin(run: RunRef, job: str = "nightly", schedule: str = "") -> RunOrigin:
    return RunOrigin(
        work_order=f"namespaces/{NS}/queues/jobs/workOrders/{run.run_id}",
        kind=RunKind.COMMAND,
        job=f"namespaces/{NS}/jobs/{job}",
        job_version=2,
        schedule=schedule,
        correlation_id="corr",
    )


def draft(clock: ManualClock, kind: str = "run.started") -> JournalDraft:
    return JournalDraft(kind, NS, clock.now(), {"run": "r"})


async def start(
    store: RunStore, clock: ManualClock, run: RunRef, attempt: int = 1, **origin_args: str
) -> None:
    await store.run_start_attempt(
        AttemptStart(run, origin(run, **origin_args), attempt, "executor-1", clock.now())
    )


async def test_start_creates_the_run_and_each_attempt_sets_it_running(
    run_store: RunStore, clock: ManualClock, executor_outbox: SqlExecutorOutbox
) -> None:
    run = ref()
    before = await executor_outbox.undelivered_count()
    started = await run_store.run_start_attempt(
        AttemptStart(run, origin(run), 1, "executor-1", clock.now(), (draft(clock),))
    )
    assert started.state is RunState.RUNNING and started.created_at == clock.now()
    assert started.origin == origin(run)
    [attempt] = started.attempts
    assert (attempt.number, attempt.executor, attempt.state) == (1, "executor-1", RunState.RUNNING)
    assert await executor_outbox.undelivered_count() == before + 1  # written with the change

    clock.advance(5)
    await run_store.run_finish_attempt(
        AttemptFinish(run, 1, AttemptEnd(RunState.FAILED, RunState.PENDING, clock.now(), NETWORK))
    )
    clock.advance(5)
    again = await run_store.run_start_attempt(
        AttemptStart(run, origin(run), 2, "executor-2", clock.now())
    )
    assert again.state is RunState.RUNNING and again.created_at == started.created_at
    assert [(a.number, a.state) for a in again.attempts] == [
        (1, RunState.FAILED),
        (2, RunState.RUNNING),
    ]


async def test_finish_ends_the_attempt_and_the_run_in_one_write(
    run_store: RunStore, clock: ManualClock, executor_outbox: SqlExecutorOutbox
) -> None:
    run = ref()
    await start(run_store, clock, run)
    before = await executor_outbox.undelivered_count()
    clock.advance(3)
    end = AttemptEnd(
        RunState.SUCCEEDED,
        RunState.SUCCEEDED,
        clock.now(),
        work_found=True,
        summary="2 endpoints called",
        usage=Usage(10, 20, 0.5),
    )
    finished = await run_store.run_finish_attempt(
        AttemptFinish(run, 1, end, (draft(clock, "run.ended"),))
    )
    assert finished.state is RunState.SUCCEEDED and finished.ended_at == clock.now()
    assert finished.work_found and finished.summary == "2 endpoints called"
    assert finished.usage == Usage(10, 20, 0.5)
    [attempt] = finished.attempts
    assert attempt.state is RunState.SUCCEEDED and attempt.ended_at == clock.now()
    assert await run_store.run_get(run) == finished
    assert await executor_outbox.undelivered_count() == before + 1

    failed_run = ref()
    await start(run_store, clock, failed_run)
    failed = await run_store.run_finish_attempt(
        AttemptFinish(
            failed_run, 1, AttemptEnd(RunState.FAILED, RunState.FAILED, clock.now(), NETWORK)
        )
    )
    assert failed.error == NETWORK and failed.attempts[0].error == NETWORK


async def test_abort_pending_ends_a_run_waiting_for_its_retry(
    run_store: RunStore, clock: ManualClock
) -> None:
    run = ref()
    await start(run_store, clock, run)
    await run_store.run_finish_attempt(
        AttemptFinish(run, 1, AttemptEnd(RunState.FAILED, RunState.PENDING, clock.now(), NETWORK))
    )
    clock.advance(1)
    aborted_error = ClassifiedError.of(ErrorType.ABORTED, "cancelled while waiting for a retry")
    aborted = await run_store.run_abort_pending(run, aborted_error, clock.now(), ())
    assert aborted.state is RunState.ABORTED and aborted.error == aborted_error
    assert aborted.ended_at == clock.now()


async def test_progress_is_kept_on_the_run(run_store: RunStore, clock: ManualClock) -> None:
    run = ref()
    await start(run_store, clock, run)
    await run_store.run_set_progress(run, Progress(60.0, "3 of 5", clock.now()))
    assert (await run_store.run_get(run)).progress == Progress(60.0, "3 of 5", clock.now())


async def test_get_of_an_unknown_run_raises_not_found(run_store: RunStore) -> None:
    with pytest.raises(RunNotFound):
        await run_store.run_get(ref())


async def test_list_filters_and_pages_newest_first(run_store: RunStore, clock: ManualClock) -> None:
    runs = []
    for i in range(4):
        run = ref()
        await start(run_store, clock, run, job="a" if i % 2 else "b", schedule=f"s{i}")
        runs.append(run)
        clock.advance(1)
    await run_store.run_finish_attempt(
        AttemptFinish(runs[0], 1, AttemptEnd(RunState.SUCCEEDED, RunState.SUCCEEDED, clock.now()))
    )
    everything = await run_store.run_list(RunListParams(NS))
    assert [r.ref for r in everything] == runs[::-1]
    first = await run_store.run_list(RunListParams(NS, limit=2))
    last = first[-1]
    cursor = RunListCursor(int(last.created_at.timestamp() * 1_000_000), last.ref.run_id)
    rest = await run_store.run_list(RunListParams(NS, after=cursor))
    assert [r.ref for r in first + rest] == runs[::-1]
    assert {
        r.ref for r in await run_store.run_list(RunListParams(NS, job=f"namespaces/{NS}/jobs/a"))
    } == {
        runs[1],
        runs[3],
    }
    done = await run_store.run_list(RunListParams(NS, states=(RunState.SUCCEEDED,)))
    assert [r.ref for r in done] == [runs[0]]
    by_order = await run_store.run_list(RunListParams(NS, work_order=origin(runs[2]).work_order))
    assert [r.ref for r in by_order] == [runs[2]]
    assert [r.ref for r in await run_store.run_list(RunListParams(NS, schedule="s3"))] == [runs[3]]
    assert await run_store.run_list(RunListParams(f"{NS}-elsewhere")) == []


async def test_steps_are_numbered_per_run_and_their_errors_kept_short(
    run_store: RunStore, clock: ManualClock
) -> None:
    run = ref()
    await start(run_store, clock, run)
    long_error = ClassifiedError(ErrorType.HANDLER_LOGIC, "x" * 500, False, {})
    first = await run_store.step_insert(
        run,
        1,
        Step(
            StepKind.HTTP_CALL,
            "api",
            StepStatus.SUCCEEDED,
            clock.now(),
            clock.now(),
            {"status_code": 200},
        ),
        100,
    )
    second = await run_store.step_insert(
        run,
        1,
        Step(StepKind.HTTP_CALL, "api", StepStatus.FAILED, clock.now(), None, {}, long_error),
        100,
    )
    assert second.seq > first.seq and first.attributes == {"status_code": 200}
    assert second.error is not None and len(second.error.message) <= 100
    steps = await run_store.step_list(run, 0, 10)
    assert [s.seq for s in steps] == [first.seq, second.seq]
    assert [s.seq for s in await run_store.step_list(run, first.seq, 10)] == [second.seq]
    with pytest.raises(RunNotFound):
        await run_store.step_list(ref(), 0, 10)


async def test_outputs_round_trip_and_an_unknown_one_raises_not_found(
    run_store: RunStore, clock: ManualClock
) -> None:
    run = ref()
    await start(run_store, clock, run)
    out = await run_store.output_insert(run, "stdout", b"hello\n", False, clock.now())
    stored = await run_store.output_get(out)
    assert (stored.name, stored.data, stored.truncated, stored.size) == (
        "stdout",
        b"hello\n",
        False,
        6,
    )
    assert stored.created_at == clock.now()
    with pytest.raises(OutputNotFound):
        await run_store.output_get(OutputRef(run, "missing"))


async def test_job_usage_sums_the_runs_of_a_job(run_store: RunStore, clock: ManualClock) -> None:
    for tokens in (10, 30):
        run = ref()
        await start(run_store, clock, run, job="metered")
        await run_store.run_finish_attempt(
            AttemptFinish(
                run,
                1,
                AttemptEnd(
                    RunState.SUCCEEDED,
                    RunState.SUCCEEDED,
                    clock.now(),
                    usage=Usage(tokens, 1, 0.25),
                ),
            )
        )
    usage = await run_store.job_usage(NS, "metered")
    assert usage.run_count == 2 and usage.usage == Usage(40, 2, 0.5)
    assert (await run_store.job_usage(NS, "never-ran")).run_count == 0


async def test_journal_append_writes_drafts_with_no_other_change(
    run_store: RunStore, clock: ManualClock, executor_outbox: SqlExecutorOutbox
) -> None:
    before = await executor_outbox.undelivered_count()
    await run_store.journal_append([draft(clock, "integration.failed"), draft(clock, "other")])
    assert await executor_outbox.undelivered_count() == before + 2
