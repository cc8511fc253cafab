"""run_command with real processes in real workspaces (tmp_path)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from google.protobuf import duration_pb2

from conveyor.common.v1 import job_pb2
from conveyor_executor.domain.failure import ErrorType
from conveyor_executor.runners import RunnerSettings, run_command
from conveyor_executor.runners.checks import SKIPPED_BY_DEFINITION
from conveyor_executor.runners.context import RunnerOutcome, StepKind, StepStatus
from conveyor_executor.runners.process import process_group_alive
from tests.helpers.run_context import MemoryRunContext

SETTINGS = RunnerSettings(kill_grace_seconds=0.5)


def seconds(value: float) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromNanoseconds(int(value * 1e9))
    return out


def sh(script: str) -> list[str]:
    return ["/bin/sh", "-c", script]


def check(name: str, level: int, script: str) -> job_pb2.VerificationCheck:
    return job_pb2.VerificationCheck(name=name, level=level, argv=sh(script))


async def run(
    target: job_pb2.CommandTarget,
    root: Path,
    ctx: MemoryRunContext | None = None,
    settings: RunnerSettings = SETTINGS,
    input_data: bytes | None = None,
) -> tuple[RunnerOutcome, MemoryRunContext]:
    ctx = ctx or MemoryRunContext()
    outcome = await run_command(target, ctx, settings, root, input_data)
    return outcome, ctx


def text(ctx: MemoryRunContext, ref: str) -> str:
    return ctx.output(ref).data.decode()


async def test_runs_in_a_fresh_workspace_with_a_minimal_environment(tmp_path: Path) -> None:
    target = job_pb2.CommandTarget(
        argv=sh(
            'pwd; echo "home=$HOME"; echo "greeting=$GREETING token=$TOKEN"; '
            'cat "$CONVEYOR_INPUT"; echo; env | sort | cut -d= -f1; echo oops >&2'
        ),
        env={"GREETING": "hello"},
        secret_env={"TOKEN": job_pb2.SecretRef(name="deploy-token")},
    )
    ctx = MemoryRunContext(run_id="run/42", attempt=3, secrets={"deploy-token": "t0ps3cret"})
    outcome, ctx = await run(target, tmp_path, ctx, input_data=b'{"job": "input"}')
    assert outcome.succeeded and outcome.work_found and outcome.error is None
    iteration = ctx.steps_of(StepKind.ITERATION)[0]
    assert iteration.status is StepStatus.SUCCEEDED and iteration.attributes["exit_code"] == 0
    stdout = text(ctx, iteration.attributes["stdout"]).splitlines()
    workspace = tmp_path / "run_42-3"
    assert stdout[0] == str(workspace)
    assert stdout[1] == f"home={workspace}"
    assert stdout[2] == "greeting=hello token=***"  # the secret was there, and is scrubbed
    assert stdout[3] == '{"job": "input"}'
    names = set(stdout[4:])
    assert names >= {
        "PATH",
        "HOME",
        "GREETING",
        "TOKEN",
        "CONVEYOR_INPUT",
        "CONVEYOR_ITERATION",
        "CONVEYOR_FEEDBACK_FILE",
        "CONVEYOR_WORK_FOUND_FILE",
    }
    assert "USER" not in names and "VIRTUAL_ENV" not in names  # nothing leaks from the executor
    assert text(ctx, iteration.attributes["stderr"]) == "oops\n"
    assert not workspace.exists()  # default keep policy: never


async def test_nonzero_exit_is_handler_logic_with_output_references(tmp_path: Path) -> None:
    target = job_pb2.CommandTarget(argv=sh("echo broken >&2; exit 3"))
    outcome, ctx = await run(target, tmp_path)
    assert not outcome.succeeded
    assert outcome.error is not None and outcome.error.type is ErrorType.HANDLER_LOGIC
    assert not outcome.error.retryable
    assert outcome.error.details["exit_code"] == "3"
    assert text(ctx, outcome.error.details["stderr"]) == "broken\n"


async def test_work_found_file(tmp_path: Path) -> None:
    target = job_pb2.CommandTarget(argv=sh('echo false > "$CONVEYOR_WORK_FOUND_FILE"'))
    outcome, _ = await run(target, tmp_path)
    assert outcome.succeeded and not outcome.work_found


async def test_unknown_secret_and_missing_program_are_invalid_input(tmp_path: Path) -> None:
    target = job_pb2.CommandTarget(argv=["true"], secret_env={"X": job_pb2.SecretRef(name="nope")})
    outcome, ctx = await run(target, tmp_path)
    assert outcome.error is not None and outcome.error.type is ErrorType.INVALID_INPUT
    assert "'nope'" in outcome.error.message and ctx.steps == []
    missing = job_pb2.CommandTarget(argv=["/definitely/not/here"])
    outcome, _ = await run(missing, tmp_path)
    assert outcome.error is not None and outcome.error.type is ErrorType.INVALID_INPUT
    assert "could not start" in outcome.error.message


async def test_timeout_kills_the_process_group(tmp_path: Path) -> None:
    target = job_pb2.CommandTarget(
        argv=sh('sleep 30 & echo "$!" > child.pid; echo started; wait'),
        timeout=seconds(0.5),
        keep_workspace=job_pb2.WORKSPACE_KEEP_POLICY_ON_FAILURE,
    )
    started = time.monotonic()
    outcome, ctx = await run(target, tmp_path)
    assert time.monotonic() - started < 5
    assert outcome.error is not None and outcome.error.type is ErrorType.TIMEOUT
    assert outcome.error.retryable
    iteration = ctx.steps_of(StepKind.ITERATION)[0]
    assert iteration.attributes["timed_out"] is True
    assert text(ctx, iteration.attributes["stdout"]) == "started\n"
    child = int((tmp_path / "run-1-1" / "child.pid").read_text())
    deadline = time.monotonic() + 2.0
    while _alive(child):  # SIGKILL lands asynchronously
        assert time.monotonic() < deadline, "the background child survived the timeout"
        await asyncio.sleep(0.01)
    decision = ctx.steps_of(StepKind.LOOP_DECISION)[0]
    assert decision.attributes["decision"] == "stop"
    assert "timed out" in decision.attributes["reason"]


async def test_sigterm_ignoring_process_is_killed_after_the_grace(tmp_path: Path) -> None:
    target = job_pb2.CommandTarget(
        argv=sh("trap '' TERM; echo $$ > leader.pid; while true; do sleep 0.05; done"),
        timeout=seconds(0.3),
        keep_workspace=job_pb2.WORKSPACE_KEEP_POLICY_ALWAYS,
    )
    outcome, _ = await run(target, tmp_path, settings=RunnerSettings(kill_grace_seconds=0.3))
    assert outcome.error is not None and outcome.error.type is ErrorType.TIMEOUT
    leader = int((tmp_path / "run-1-1" / "leader.pid").read_text())
    await group_gone(leader)


async def test_abort_during_a_long_command_is_prompt_and_leaves_no_process(
    tmp_path: Path,
) -> None:
    target = job_pb2.CommandTarget(
        argv=sh('echo $$ > "$HOME/leader.pid"; sleep 60 & sleep 60'),
        checks=[check("never", 1, "true")],
        keep_workspace=job_pb2.WORKSPACE_KEEP_POLICY_ON_FAILURE,
    )
    ctx = MemoryRunContext()
    task = asyncio.create_task(run(target, tmp_path, ctx))
    pid_file = tmp_path / "run-1-1" / "leader.pid"
    deadline = time.monotonic() + 10
    while not (pid_file.exists() and pid_file.read_text().strip()):
        assert time.monotonic() < deadline, "the command never started"
        await asyncio.sleep(0.02)
    leader = int(pid_file.read_text())
    aborted_at = time.monotonic()
    ctx.cancelled.set()
    outcome, _ = await asyncio.wait_for(task, 5)
    # Far short of the command's 60 s: the abort killed it rather than waiting for it.
    assert time.monotonic() - aborted_at < 20.0
    assert outcome.error is not None and outcome.error.type is ErrorType.ABORTED
    await group_gone(leader, within=1.0)
    assert ctx.statuses(StepKind.ITERATION) == [("iteration 1", StepStatus.ABORTED)]
    assert ctx.statuses(StepKind.CHECK) == [("never", StepStatus.ABORTED)]
    assert "workspace kept at" in outcome.summary  # on failure, for inspection


async def test_output_is_truncated_with_a_marker_and_bounded(tmp_path: Path) -> None:
    code = "import sys; sys.stdout.write('a' * 1000 + 'b' * 5_000_000 + 'z' * 1000)"
    script = f'{sys.executable} -c "{code}"'
    target = job_pb2.CommandTarget(argv=sh(script))
    outcome, ctx = await run(target, tmp_path, settings=RunnerSettings(max_output_bytes=2000))
    assert outcome.succeeded
    iteration = ctx.steps_of(StepKind.ITERATION)[0]
    saved = ctx.output(iteration.attributes["stdout"])
    assert saved.truncated and iteration.attributes["stdout_truncated"] is True
    assert iteration.attributes["stdout_bytes"] == 5_002_000
    assert saved.data == b"a" * 1000 + b"\n[... truncated 5000000 bytes ...]\n" + b"z" * 1000


async def test_checks_run_by_level_and_record_skips(tmp_path: Path) -> None:
    target = job_pb2.CommandTarget(
        argv=["true"],
        checks=[
            check("integration", 3, "true"),
            check("lint", 1, "echo lint ok"),
            check("docs", 2, "exit 9"),
            check("types", 1, "true"),
            check("slow", 4, "true"),
            check("unit", 2, "echo unit failed; exit 1"),
        ],
        skip_levels=[4],
    )
    outcome, ctx = await run(target, tmp_path)
    assert outcome.error is not None and outcome.error.type is ErrorType.VERIFICATION_FAILED
    assert outcome.error.details["checks"] == "docs, unit"
    assert ctx.statuses(StepKind.CHECK) == [
        ("lint", StepStatus.SUCCEEDED),
        ("types", StepStatus.SUCCEEDED),
        ("docs", StepStatus.FAILED),
        ("unit", StepStatus.FAILED),
        ("integration", StepStatus.SKIPPED),
        ("slow", StepStatus.SKIPPED),
    ]
    reasons = {s.name: s.attributes.get("reason") for s in ctx.steps_of(StepKind.CHECK)}
    assert reasons["integration"] == "level 2 failed"
    assert reasons["slow"] == SKIPPED_BY_DEFINITION
    unit = ctx.steps_of(StepKind.CHECK, "unit")[0]
    assert unit.attributes["exit_code"] == 1 and unit.attributes["level"] == 2
    assert text(ctx, unit.attributes["output"]) == "unit failed\n"


async def test_skipped_level_does_not_stop_higher_levels(tmp_path: Path) -> None:
    target = job_pb2.CommandTarget(
        argv=["true"],
        checks=[check("flaky", 1, "exit 1"), check("real", 2, "true")],
        skip_levels=[1],
    )
    outcome, ctx = await run(target, tmp_path)
    assert outcome.succeeded
    assert ctx.statuses(StepKind.CHECK) == [
        ("flaky", StepStatus.SKIPPED),
        ("real", StepStatus.SUCCEEDED),
    ]


async def test_fixed_loop_runs_n_iterations_with_feedback(tmp_path: Path) -> None:
    target = job_pb2.CommandTarget(
        argv=sh('cat "$CONVEYOR_FEEDBACK_FILE"'),
        checks=[
            check("odd", 1, "test $((CONVEYOR_ITERATION % 2)) -eq 1 || { echo even; exit 1; }")
        ],
        loop=job_pb2.LoopPolicy(strategy=job_pb2.LOOP_STRATEGY_FIXED, iterations=3),
    )
    outcome, ctx = await run(target, tmp_path)
    assert outcome.succeeded  # the last (third) iteration passed its check
    assert [s.attributes["decision"] for s in ctx.steps_of(StepKind.LOOP_DECISION)] == [
        "continue",
        "continue",
        "stop",
    ]
    feedbacks = [
        json.loads(text(ctx, s.attributes["stdout"])) for s in ctx.steps_of(StepKind.ITERATION)
    ]
    assert feedbacks[0] == {"iteration": 1, "previous_iteration": None, "failures": []}
    assert feedbacks[2]["previous_iteration"] == 2
    assert feedbacks[2]["failures"][0]["check"] == "odd"
    assert feedbacks[2]["failures"][0]["output_tail"] == "even\n"


async def test_until_verified_loops_until_the_checks_pass(tmp_path: Path) -> None:
    # The "agent" fixes the file only after seeing the check's complaint in its feedback.
    target = job_pb2.CommandTarget(
        argv=sh(
            'if grep -q "missing answer" "$CONVEYOR_FEEDBACK_FILE"; then echo 42 > answer; '
            "else echo draft > answer; fi"
        ),
        checks=[check("answer", 1, 'grep -q 42 answer || { echo "missing answer"; exit 1; }')],
        loop=job_pb2.LoopPolicy(strategy=job_pb2.LOOP_STRATEGY_UNTIL_VERIFIED, max_iterations=5),
    )
    outcome, ctx = await run(target, tmp_path)
    assert outcome.succeeded
    decisions = [s.attributes for s in ctx.steps_of(StepKind.LOOP_DECISION)]
    assert [d["decision"] for d in decisions] == ["continue", "stop"]
    assert decisions[0]["reason"].startswith("not verified at iteration 1")
    assert decisions[1]["reason"] == "verified at iteration 2"


async def test_until_verified_gives_up_at_the_cap_with_verification_failed(
    tmp_path: Path,
) -> None:
    target = job_pb2.CommandTarget(
        argv=["true"],
        checks=[check("never", 1, "exit 1")],
        loop=job_pb2.LoopPolicy(strategy=job_pb2.LOOP_STRATEGY_UNTIL_VERIFIED, max_iterations=3),
    )
    outcome, ctx = await run(target, tmp_path)
    assert outcome.error is not None and outcome.error.type is ErrorType.VERIFICATION_FAILED
    assert outcome.error.retryable
    assert len(ctx.steps_of(StepKind.ITERATION)) == 3
    last = ctx.steps_of(StepKind.LOOP_DECISION)[-1]
    assert last.attributes["reason"] == "not verified after the maximum of 3 iteration(s)"


async def test_hybrid_runs_its_minimum_then_until_verified(tmp_path: Path) -> None:
    target = job_pb2.CommandTarget(
        argv=sh('test "$CONVEYOR_ITERATION" -ge 3 && echo > done; exit 0'),
        checks=[check("done", 1, "test -f done")],
        loop=job_pb2.LoopPolicy(
            strategy=job_pb2.LOOP_STRATEGY_HYBRID, iterations=2, max_iterations=6
        ),
    )
    outcome, ctx = await run(target, tmp_path)
    assert outcome.succeeded
    reasons = [s.attributes["reason"] for s in ctx.steps_of(StepKind.LOOP_DECISION)]
    assert reasons == [
        "hybrid loop: 2 iterations required, 1 done",
        "not verified at iteration 2; trying again (2/6 used)",
        "verified at iteration 3",
    ]


async def test_failed_command_skips_checks_and_feeds_its_stderr_forward(tmp_path: Path) -> None:
    target = job_pb2.CommandTarget(
        argv=sh(
            'if [ "$CONVEYOR_ITERATION" = 1 ]; then echo "compile error" >&2; exit 2; fi; '
            'grep -q "compile error" "$CONVEYOR_FEEDBACK_FILE"'
        ),
        checks=[check("c", 1, "true")],
        loop=job_pb2.LoopPolicy(strategy=job_pb2.LOOP_STRATEGY_UNTIL_VERIFIED, max_iterations=3),
    )
    outcome, ctx = await run(target, tmp_path)
    assert outcome.succeeded
    checks = ctx.steps_of(StepKind.CHECK)
    assert (checks[0].status, checks[0].attributes["reason"]) == (
        StepStatus.SKIPPED,
        "the command exited with code 2",
    )
    assert checks[1].status is StepStatus.SUCCEEDED


async def test_workspace_keep_policies(tmp_path: Path) -> None:
    cases = [
        (job_pb2.WORKSPACE_KEEP_POLICY_NEVER, "exit 1", False),
        (job_pb2.WORKSPACE_KEEP_POLICY_ON_FAILURE, "exit 0", False),
        (job_pb2.WORKSPACE_KEEP_POLICY_ON_FAILURE, "exit 1", True),
        (job_pb2.WORKSPACE_KEEP_POLICY_ALWAYS, "exit 0", True),
    ]
    for number, (policy, script, kept) in enumerate(cases):
        target = job_pb2.CommandTarget(
            argv=sh(f"echo data > file; {script}"), keep_workspace=policy
        )
        ctx = MemoryRunContext(run_id=f"keep{number}")
        outcome, _ = await run(target, tmp_path, ctx)
        workspace = tmp_path / f"keep{number}-1"
        assert workspace.exists() is kept, (policy, script)
        assert ("workspace kept at" in outcome.summary) is kept
        if kept:
            assert (workspace / "file").read_text() == "data\n"


async def test_a_leftover_workspace_is_replaced_by_a_fresh_one(tmp_path: Path) -> None:
    stale = tmp_path / "run-1-1"
    stale.mkdir()
    (stale / "old").write_text("stale")
    target = job_pb2.CommandTarget(argv=sh("test ! -e old"))
    outcome, _ = await run(target, tmp_path)
    assert outcome.succeeded


async def group_gone(pgid: int, within: float = 2.0) -> None:
    """Wait until no live process of group `pgid` is left; fail after `within` seconds.

    SIGKILL is delivered asynchronously, so the kernel may need a moment.
    """
    deadline = time.monotonic() + within
    while process_group_alive(pgid):
        assert time.monotonic() < deadline, f"process group {pgid} still alive after {within}s"
        await asyncio.sleep(0.01)


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie awaiting its reaper counts as gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in status
