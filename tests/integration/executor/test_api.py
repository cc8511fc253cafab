"""ExecutorService reads: GetRun, ListRuns (filters, paging), steps, outputs, usage, bad input."""

from __future__ import annotations

import grpc
import pytest

from conveyor.executor.v1 import messages_pb2 as pb
from conveyor.executor.v1 import service_pb2 as rpc
from conveyor_core.grpc import rich_error_details
from tests.helpers.executor import ExecutorEnv, command_invocation, run_name

JOB = "namespaces/test/jobs/report"


async def _field_violations(call) -> tuple[grpc.StatusCode, list[str]]:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    details = rich_error_details(caught.value)
    return details.code, [field for field, _ in details.field_violations]


async def test_list_runs_filters_and_pages_newest_first(executor: ExecutorEnv) -> None:
    orders = [await executor.submit(command_invocation("ok", job=JOB)) for _ in range(3)]
    other = await executor.submit(command_invocation("fail", "auth", "false"))
    for order in orders:
        await executor.wait_run(order, [pb.RUN_STATE_SUCCEEDED])
    await executor.wait_run(other, [pb.RUN_STATE_FAILED])

    names: list[str] = []
    token = ""
    while True:
        page = await executor.stub.ListRuns(
            rpc.ListRunsRequest(parent="namespaces/test", job=JOB, page_size=2, page_token=token)
        )
        names += [r.name for r in page.runs]
        token = page.next_page_token
        if not token:
            break
    assert sorted(names) == sorted(run_name(o) for o in orders)
    assert len(names) == 3

    failed = await executor.stub.ListRuns(
        rpc.ListRunsRequest(parent="namespaces/test", states=[pb.RUN_STATE_FAILED])
    )
    assert [r.name for r in failed.runs] == [run_name(other)]
    by_order = await executor.stub.ListRuns(
        rpc.ListRunsRequest(parent="namespaces/test", work_order=orders[1].name)
    )
    assert [r.name for r in by_order.runs] == [run_name(orders[1])]

    usage = await executor.stub.GetJobUsage(rpc.GetJobUsageRequest(job=JOB))
    assert usage.usage.run_count == 3
    assert (usage.usage.usage.input_tokens, usage.usage.usage.output_tokens) == (30, 15)


async def test_steps_are_listed_in_order(executor: ExecutorEnv) -> None:
    order = await executor.submit(command_invocation("block"))
    await executor.wait_run(order, [pb.RUN_STATE_RUNNING])
    await executor.stub.AbortRun(rpc.AbortRunRequest(name=run_name(order)))
    await executor.wait_run(order, [pb.RUN_STATE_ABORTED])
    steps = await executor.stub.ListRunSteps(rpc.ListRunStepsRequest(parent=run_name(order)))
    assert [(s.kind, s.display_name, s.attempt) for s in steps.steps] == [
        ("iteration", "iteration 1", 1)
    ]
    assert steps.steps[0].attributes["index"] == 1
    assert steps.steps[0].name.startswith(run_name(order) + "/steps/")


async def test_outputs_are_kept_truncated_at_the_limit_and_readable(executor: ExecutorEnv) -> None:
    from conveyor_executor.context import AttemptContext
    from conveyor_executor.domain.model import RunRef

    service = executor.service
    ctx = AttemptContext(
        RunRef("test", "r1"),
        1,
        service.recorder,
        service.pool.deps.secrets,
        service.hub,
        service.clock,
        max_output_bytes=4,
    )
    ref = await ctx.save_output("stdout", b"0123456789", truncated=False)
    assert ref.startswith("outputs/")
    response = await executor.stub.GetOutput(
        rpc.GetOutputRequest(name=f"namespaces/test/runs/r1/{ref}")
    )
    assert (response.output.data, response.output.truncated) == (b"0123", True)
    assert response.output.display_name == "stdout"


async def test_list_outputs_pages_a_runs_outputs_without_their_data(
    executor: ExecutorEnv,
) -> None:
    from conveyor_executor.context import AttemptContext
    from conveyor_executor.domain.model import RunRef

    order = await executor.submit(command_invocation("ok"))
    await executor.wait_run(order, [pb.RUN_STATE_SUCCEEDED])
    service = executor.service
    ctx = AttemptContext(
        RunRef(order.namespace, order.id),
        1,
        service.recorder,
        service.pool.deps.secrets,
        service.hub,
        service.clock,
        max_output_bytes=1024,
    )
    saved = {
        name: await ctx.save_output(name, data, truncated=False)
        for name, data in (("stdout", b"hello\n"), ("stderr", b"oops"), ("check", b"ok"))
    }
    parent = run_name(order)
    first = await executor.stub.ListOutputs(rpc.ListOutputsRequest(parent=parent, page_size=2))
    assert len(first.outputs) == 2 and first.next_page_token
    rest = await executor.stub.ListOutputs(
        rpc.ListOutputsRequest(parent=parent, page_size=2, page_token=first.next_page_token)
    )
    assert len(rest.outputs) == 1 and not rest.next_page_token
    listed = [*first.outputs, *rest.outputs]
    assert {o.name for o in listed} == {f"{parent}/{ref}" for ref in saved.values()}
    sizes = {o.display_name: (o.size_bytes, o.data) for o in listed}
    assert sizes == {"stdout": (6, b""), "stderr": (4, b""), "check": (2, b"")}
    times = [(o.create_time.ToNanoseconds(), o.name) for o in listed]
    assert times == sorted(times), "oldest first"
    got = await executor.stub.GetOutput(rpc.GetOutputRequest(name=f"{parent}/{saved['stdout']}"))
    assert got.output.data == b"hello\n"

    missing = await _field_violations(
        executor.stub.ListOutputs(rpc.ListOutputsRequest(parent="namespaces/test/runs/0000"))
    )
    assert missing == (grpc.StatusCode.NOT_FOUND, [])
    for request, field in (
        (rpc.ListOutputsRequest(parent="runs/x"), "parent"),
        (rpc.ListOutputsRequest(parent=parent, page_token="x"), "page_token"),
        (rpc.ListOutputsRequest(parent=parent, page_size=-1), "page_size"),
    ):
        code, fields = await _field_violations(executor.stub.ListOutputs(request))
        assert (code, fields) == (grpc.StatusCode.INVALID_ARGUMENT, [field]), request


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (rpc.GetRunRequest(name=""), "name"),
        (rpc.GetRunRequest(name="runs/x"), "name"),
        (rpc.GetRunRequest(name="namespaces/Bad/runs/x"), "name"),
        (rpc.GetRunRequest(name="namespaces/test/runs/has space"), "name"),
    ],
)
async def test_get_run_rejects_bad_names(
    executor: ExecutorEnv, request_: rpc.GetRunRequest, field: str
) -> None:
    code, fields = await _field_violations(executor.stub.GetRun(request_))
    assert (code, fields) == (grpc.StatusCode.INVALID_ARGUMENT, [field])


async def test_list_runs_rejects_bad_input(executor: ExecutorEnv) -> None:
    cases = [
        (rpc.ListRunsRequest(parent="nope"), "parent"),
        (rpc.ListRunsRequest(parent="namespaces/test", page_size=-1), "page_size"),
        (rpc.ListRunsRequest(parent="namespaces/test", page_token="garbage!"), "page_token"),
        (rpc.ListRunsRequest(parent="namespaces/test", job="jobs/x"), "job"),
        (rpc.ListRunsRequest(parent="namespaces/test", job="namespaces/other/jobs/x"), "job"),
        (rpc.ListRunsRequest(parent="namespaces/test", states=[42]), "states[0]"),
        (rpc.ListRunsRequest(parent="namespaces/test", work_order="elsewhere"), "work_order"),
    ]
    for request, field in cases:
        code, fields = await _field_violations(executor.stub.ListRuns(request))
        assert (code, fields) == (grpc.StatusCode.INVALID_ARGUMENT, [field]), request


async def test_a_page_token_is_refused_with_other_filters(executor: ExecutorEnv) -> None:
    for _ in range(2):
        order = await executor.submit(command_invocation("ok", job=JOB))
        await executor.wait_run(order, [pb.RUN_STATE_SUCCEEDED])
    page = await executor.stub.ListRuns(
        rpc.ListRunsRequest(parent="namespaces/test", job=JOB, page_size=1)
    )
    assert page.next_page_token
    code, fields = await _field_violations(
        executor.stub.ListRuns(
            rpc.ListRunsRequest(parent="namespaces/test", page_token=page.next_page_token)
        )
    )
    assert (code, fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["page_token"])


async def test_missing_runs_and_outputs_are_not_found(executor: ExecutorEnv) -> None:
    missing = "namespaces/test/runs/0000"
    for call in (
        executor.stub.GetRun(rpc.GetRunRequest(name=missing)),
        executor.stub.AbortRun(rpc.AbortRunRequest(name=missing)),
        executor.stub.ListRunSteps(rpc.ListRunStepsRequest(parent=missing)),
        executor.stub.GetOutput(rpc.GetOutputRequest(name=f"{missing}/outputs/{'a' * 32}")),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() is grpc.StatusCode.NOT_FOUND
        assert rich_error_details(caught.value).resource_name.startswith(missing)
    code, fields = await _field_violations(
        executor.stub.AbortRun(rpc.AbortRunRequest(name="namespaces/test/runs/x/y"))
    )
    assert (code, fields) == (grpc.StatusCode.INVALID_ARGUMENT, ["name"])


async def test_other_calls_reject_bad_input_with_field_details(executor: ExecutorEnv) -> None:
    cases = [
        (executor.stub.GetJobUsage(rpc.GetJobUsageRequest(job="jobs/x")), "job"),
        (
            executor.stub.ListRunSteps(
                rpc.ListRunStepsRequest(parent="namespaces/test/runs/r", page_token="x")
            ),
            "page_token",
        ),
        (executor.stub.GetOutput(rpc.GetOutputRequest(name="namespaces/test/runs/r")), "name"),
        (
            executor.stub.AbortRun(
                rpc.AbortRunRequest(name="namespaces/test/runs/r", reason="x" * 600)
            ),
            "reason",
        ),
    ]
    for call, field in cases:
        code, fields = await _field_violations(call)
        assert (code, fields) == (grpc.StatusCode.INVALID_ARGUMENT, [field])


async def test_watch_run_rejects_bad_names_and_missing_runs(executor: ExecutorEnv) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in executor.stub.WatchRun(rpc.WatchRunRequest(name="runs/x")):
            pass
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in rich_error_details(caught.value).field_violations] == ["name"]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in executor.stub.WatchRun(rpc.WatchRunRequest(name="namespaces/test/runs/0")):
            pass
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND
