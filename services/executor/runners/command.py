"""The command runner: executes one attempt of a command job.

Each attempt gets a fresh workspace `<workspace_root>/<run id>-<attempt>` (the
process's cwd and HOME), removed afterwards unless the keep policy says
otherwise. The environment is minimal (PATH, HOME) plus the job's `env` and
resolved `secret_env`, plus:

* CONVEYOR_WORKSPACE, CONVEYOR_RUN_ID, CONVEYOR_ATTEMPT, CONVEYOR_ITERATION;
* CONVEYOR_INPUT: a file holding the invocation's input (set only with input);
* CONVEYOR_WORK_FOUND_FILE: write "false" there to report no work found;
* CONVEYOR_FEEDBACK_FILE: JSON about the previous iteration (exit code,
  whether it timed out, stderr tail, failed checks with their output tails);
  `{"iteration": 1, "previous_iteration": null, "failures": []}` at first.

Each iteration: run the process (ITERATION step, stdout/stderr saved through
ctx.save_output, scrubbed and truncated with a marker), then the checks (CHECK
steps; skipped when the process failed), then the loop strategy's decision
(LOOP_DECISION step with the reason). The last iteration decides the outcome:
exit code != 0 -> handler_logic, timeout -> timeout, failed checks ->
verification_failed, abort -> aborted.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor.common.v1 import job_pb2
from conveyor_core.clock import Clock, SystemClock
from conveyor_executor.domain.failure import ClassifiedError, ErrorType
from conveyor_executor.runners.checks import (
    CheckEnvironment,
    ChecksResult,
    run_checks,
    skip_checks,
)
from conveyor_executor.runners.context import RunContext, RunnerOutcome, Step, StepKind, StepStatus
from conveyor_executor.runners.loop import Decision, IterationVerdict, decide, loop_bounds
from conveyor_executor.runners.process import ProcessResult, run_process
from conveyor_executor.runners.scrub import Scrubber, tail
from conveyor_executor.runners.settings import RunnerSettings

logger = logging.getLogger(__name__)

_CONTROL_DIR = ".conveyor"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


class _InvalidCommand(Exception):
    def __init__(self, error: ClassifiedError) -> None:
        super().__init__(error.message)
        self.error = error


@dataclass
class _Iteration:
    index: int
    process: ProcessResult
    checks: ChecksResult | None
    refs: dict[str, str]

    @property
    def passed(self) -> bool:
        ok = self.process.exit_code == 0 and not self.process.timed_out
        return ok and not self.process.aborted and (self.checks is None or self.checks.passed)


async def run_command(
    target: job_pb2.CommandTarget,
    ctx: RunContext,
    settings: RunnerSettings,
    workspace_root: Path,
    input: bytes | None,
    *,
    clock: Clock | None = None,
) -> RunnerOutcome:
    """Run one attempt of a command job; failures come back classified, never raised."""
    clock = clock or SystemClock()
    try:
        secret_env = _resolve_secrets(target, ctx)
        if not target.argv:
            raise _InvalidCommand(
                ClassifiedError.of(ErrorType.INVALID_INPUT, "the command job has an empty argv")
            )
    except _InvalidCommand as exc:
        return RunnerOutcome(False, True, f"command not run: {exc}", error=exc.error)
    try:
        workspace = _fresh_workspace(workspace_root, ctx)
    except OSError as exc:
        message = f"could not prepare the run's workspace under {workspace_root}: {exc}"
        return RunnerOutcome(
            False, True, "command not run", ClassifiedError.of(ErrorType.INTERNAL, message)
        )
    scrubber = Scrubber(settings.scrub_patterns, (), secret_env.values())
    run = _CommandRun(target, ctx, settings, clock, scrubber, workspace)
    outcome = RunnerOutcome(
        False, True, "internal error", ClassifiedError.of(ErrorType.INTERNAL, "not finished")
    )
    try:
        outcome = await run.execute(
            _environment(target, ctx, settings, workspace, secret_env, input)
        )
    finally:
        outcome = _apply_keep_policy(target.keep_workspace, workspace, outcome)
    return outcome


def _resolve_secrets(target: job_pb2.CommandTarget, ctx: RunContext) -> dict[str, str]:
    resolved: dict[str, str] = {}
    for variable, ref in target.secret_env.items():
        value = ctx.secret(ref.name)
        if value is None:
            message = (
                f"secret {ref.name!r} (environment variable {variable}) is not known to the "
                "executor; define it in the executor's secret source"
            )
            raise _InvalidCommand(
                ClassifiedError.of(ErrorType.INVALID_INPUT, message, secret=ref.name)
            )
        resolved[variable] = value
    return resolved


def _fresh_workspace(root: Path, ctx: RunContext) -> Path:
    workspace = Path(root) / f"{_UNSAFE.sub('_', ctx.run_id)}-{ctx.attempt}"
    if workspace.exists():  # left by a crashed executor running this same attempt
        shutil.rmtree(workspace, ignore_errors=True)
    (workspace / _CONTROL_DIR).mkdir(parents=True)
    return workspace


def _environment(
    target: job_pb2.CommandTarget,
    ctx: RunContext,
    settings: RunnerSettings,
    workspace: Path,
    secret_env: dict[str, str],
    input_data: bytes | None,
) -> dict[str, str]:
    control = workspace / _CONTROL_DIR
    env = {"PATH": settings.command_path, "HOME": str(workspace)}
    env.update(target.env)
    env.update(secret_env)
    env.update(
        CONVEYOR_WORKSPACE=str(workspace),
        CONVEYOR_RUN_ID=ctx.run_id,
        CONVEYOR_ATTEMPT=str(ctx.attempt),
        CONVEYOR_WORK_FOUND_FILE=str(control / "work_found"),
        CONVEYOR_FEEDBACK_FILE=str(control / "feedback.json"),
    )
    if input_data is not None:
        (control / "input").write_bytes(input_data)
        env["CONVEYOR_INPUT"] = str(control / "input")
    return env


def _apply_keep_policy(policy: int, workspace: Path, outcome: RunnerOutcome) -> RunnerOutcome:
    keep = policy == job_pb2.WORKSPACE_KEEP_POLICY_ALWAYS or (
        policy == job_pb2.WORKSPACE_KEEP_POLICY_ON_FAILURE and not outcome.succeeded
    )
    if not keep:
        shutil.rmtree(workspace, ignore_errors=True)
        return outcome
    logger.info("workspace of the run kept at %s", workspace)
    return RunnerOutcome(
        outcome.succeeded,
        outcome.work_found,
        f"{outcome.summary}; workspace kept at {workspace}",
        outcome.error,
        outcome.input_tokens,
        outcome.output_tokens,
        outcome.cost_usd,
    )


class _CommandRun:
    def __init__(
        self,
        target: job_pb2.CommandTarget,
        ctx: RunContext,
        settings: RunnerSettings,
        clock: Clock,
        scrubber: Scrubber,
        workspace: Path,
    ) -> None:
        self._target = target
        self._ctx = ctx
        self._settings = settings
        self._clock = clock
        self._scrubber = scrubber
        self._workspace = workspace
        timeout = settings.command_timeout_seconds
        if target.HasField("timeout") and target.timeout.ToTimedelta().total_seconds() > 0:
            timeout = target.timeout.ToTimedelta().total_seconds()
        self._timeout = min(timeout, settings.command_max_timeout_seconds)

    async def execute(self, env: dict[str, str]) -> RunnerOutcome:
        bounds = loop_bounds(
            self._target.loop if self._target.HasField("loop") else None, self._settings
        )
        previous: _Iteration | None = None
        index = 0
        while True:
            index += 1
            self._write_feedback(index, previous)
            iteration = await self._iterate(index, {**env, "CONVEYOR_ITERATION": str(index)})
            verdict = IterationVerdict(
                index,
                iteration.passed,
                timed_out=iteration.process.timed_out,
                aborted=iteration.process.aborted or self._ctx.cancelled.is_set(),
            )
            decision, reason = decide(bounds, verdict)
            await self._record_decision(index, decision, reason)
            await self._ctx.report_progress(
                min(99.0, 100.0 * index / bounds.maximum), f"iteration {index}: {reason}"
            )
            previous = iteration
            if decision is Decision.STOP:
                return self._outcome(iteration, verdict)

    async def _iterate(self, index: int, env: dict[str, str]) -> _Iteration:
        started_at = self._clock.now()
        result = await run_process(
            list(self._target.argv),
            cwd=self._workspace,
            env=env,
            timeout_seconds=self._timeout,
            cancelled=self._ctx.cancelled,
            max_output_bytes=self._settings.max_output_bytes,
            kill_grace=self._settings.kill_grace_seconds,
        )
        refs = await self._save_outputs(index, result)
        await self._record_iteration(index, result, refs, started_at)
        check_env = CheckEnvironment(
            self._ctx, self._settings, self._clock, self._scrubber, self._workspace, env, index
        )
        checks = self._target.checks
        if result.aborted or self._ctx.cancelled.is_set():
            await skip_checks(checks, "the run was aborted", StepStatus.ABORTED, check_env)
            return _Iteration(index, result, None, refs)
        if result.exit_code != 0 or result.timed_out:
            why = "timed out" if result.timed_out else f"exited with code {result.exit_code}"
            await skip_checks(checks, f"the command {why}", StepStatus.SKIPPED, check_env)
            return _Iteration(index, result, None, refs)
        outcome = await run_checks(checks, list(self._target.skip_levels), check_env)
        return _Iteration(index, result, outcome, refs)

    async def _save_outputs(self, index: int, result: ProcessResult) -> dict[str, str]:
        refs = {}
        for stream, capture in (("stdout", result.stdout), ("stderr", result.stderr)):
            data = self._scrubber.bytes_(capture.value())
            refs[stream] = await self._ctx.save_output(
                f"iteration {index} {stream}", data, truncated=capture.truncated
            )
        return refs

    async def _record_iteration(
        self, index: int, result: ProcessResult, refs: dict[str, str], started_at: Any
    ) -> None:
        error = self._process_error(index, result, refs)
        status = StepStatus.SUCCEEDED if error is None else StepStatus.FAILED
        if result.aborted:
            status = StepStatus.ABORTED
        attributes = {
            "index": index,
            "exit_code": result.exit_code,
            "stdout": refs["stdout"],
            "stderr": refs["stderr"],
            "stdout_truncated": result.stdout.truncated,
            "stderr_truncated": result.stderr.truncated,
            "stdout_bytes": result.stdout.total,
            "stderr_bytes": result.stderr.total,
            "timed_out": result.timed_out,
            "duration_ms": result.duration_ms,
        }
        await self._ctx.record_step(
            Step(
                StepKind.ITERATION,
                f"iteration {index}",
                status,
                started_at,
                self._clock.now(),
                attributes,
                error,
            )
        )

    def _process_error(
        self, index: int, result: ProcessResult, refs: dict[str, str]
    ) -> ClassifiedError | None:
        details = {"iteration": str(index), "stdout": refs["stdout"], "stderr": refs["stderr"]}
        argv0 = self._target.argv[0]
        if result.aborted:
            return ClassifiedError.of(
                ErrorType.ABORTED, f"iteration {index} killed: the run was aborted", **details
            )
        if result.timed_out:
            message = f"{argv0!r} did not finish within {self._timeout:g}s (iteration {index})"
            return ClassifiedError.of(ErrorType.TIMEOUT, message, **details)
        if result.exit_code is None:
            message = f"{argv0!r} could not start: {result.start_error}"
            return ClassifiedError.of(ErrorType.INVALID_INPUT, message, **details)
        if result.exit_code != 0:
            message = (
                f"{argv0!r} exited with code {result.exit_code} (iteration {index}); "
                f"see its stderr ({refs['stderr']})"
            )
            return ClassifiedError.of(
                ErrorType.HANDLER_LOGIC, message, exit_code=str(result.exit_code), **details
            )
        return None

    def _outcome(self, last: _Iteration, verdict: IterationVerdict) -> RunnerOutcome:
        work_found = self._work_found()
        summary = f"{last.index} iteration(s); last " + (
            "passed" if last.passed else "aborted" if verdict.aborted else "failed"
        )
        if verdict.aborted:
            aborted = ClassifiedError.of(
                ErrorType.ABORTED, "the run was aborted before it finished"
            )
            return RunnerOutcome(False, work_found, summary, aborted)
        error = self._process_error(last.index, last.process, last.refs)
        if error is None and last.checks is not None and last.checks.failures:
            names = ", ".join(f.name for f in last.checks.failures)
            error = ClassifiedError.of(
                ErrorType.VERIFICATION_FAILED,
                f"verification failed after iteration {last.index}: {names}",
                iteration=str(last.index),
                checks=names,
            )
        if error is not None:
            return RunnerOutcome(False, work_found, summary, error)
        return RunnerOutcome(True, work_found, summary)

    def _work_found(self) -> bool:
        path = self._workspace / _CONTROL_DIR / "work_found"
        try:
            with path.open("rb") as handle:
                answer = handle.read(64)
        except OSError:
            return True
        return answer.strip().lower() != b"false"

    def _write_feedback(self, index: int, previous: _Iteration | None) -> None:
        feedback: dict[str, Any] = {"iteration": index, "previous_iteration": None, "failures": []}
        if previous is not None:
            limit = self._settings.feedback_max_bytes
            stderr = tail(self._scrubber.bytes_(previous.process.stderr.value()), limit)
            failures = previous.checks.failures if previous.checks else ()
            feedback.update(
                previous_iteration=previous.index,
                exit_code=previous.process.exit_code,
                timed_out=previous.process.timed_out,
                passed=previous.passed,
                stderr_tail=stderr.decode("utf-8", errors="replace"),
                failures=[f.as_json() for f in failures],
            )
        path = self._workspace / _CONTROL_DIR / "feedback.json"
        path.write_text(json.dumps(feedback, indent=2))

    async def _record_decision(self, index: int, decision: Decision, reason: str) -> None:
        now = self._clock.now()
        attributes = {"decision": str(decision), "reason": reason, "iteration": index}
        await self._ctx.record_step(
            Step(
                StepKind.LOOP_DECISION,
                f"after iteration {index}",
                StepStatus.INFO,
                now,
                now,
                attributes,
            )
        )
