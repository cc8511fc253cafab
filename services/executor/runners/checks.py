"""Verification checks of a command job, level by level, after each iteration.

Checks run in ascending level order (checks of one level in definition
order). A level listed in `skip_levels` is recorded skipped "skipped by job
definition" and does not stop higher levels; a level with a failed check
stops every higher level, recorded skipped with the reason. Each check's
output (stdout then stderr) is saved; a failure carries the tail of it as
feedback for the next iteration.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor.common.v1 import job_pb2
from conveyor_core.clock import Clock
from conveyor_executor.runners.context import RunContext, Step, StepKind, StepStatus
from conveyor_executor.runners.process import ProcessResult, run_process
from conveyor_executor.runners.scrub import Scrubber, tail
from conveyor_executor.runners.settings import RunnerSettings

SKIPPED_BY_DEFINITION = "skipped by job definition"


@dataclass(frozen=True)
class CheckFailure:
    """A failed check, as passed to the next iteration's feedback."""

    name: str
    level: int
    exit_code: int | None
    output_tail: str
    timed_out: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "check": self.name,
            "level": self.level,
            "exit_code": self.exit_code,
            "timed_out": self.timed_out,
            "output_tail": self.output_tail,
        }


@dataclass(frozen=True)
class ChecksResult:
    failures: tuple[CheckFailure, ...]
    aborted: bool = False

    @property
    def passed(self) -> bool:
        return not self.failures and not self.aborted


@dataclass(frozen=True)
class CheckEnvironment:
    ctx: RunContext
    settings: RunnerSettings
    clock: Clock
    scrubber: Scrubber
    workspace: Path
    env: Mapping[str, str]
    iteration: int


def ordered_levels(
    checks: Sequence[job_pb2.VerificationCheck],
) -> list[tuple[int, list[job_pb2.VerificationCheck]]]:
    """Checks grouped by level, lowest level first, definition order within a level."""
    ordered = sorted(checks, key=lambda check: check.level)  # sort is stable
    return [(level, list(group)) for level, group in itertools.groupby(ordered, lambda c: c.level)]


async def run_checks(
    checks: Sequence[job_pb2.VerificationCheck], skip_levels: Sequence[int], env: CheckEnvironment
) -> ChecksResult:
    failures: list[CheckFailure] = []
    failed_level: int | None = None
    for level, group in ordered_levels(checks):
        for check in group:
            if env.ctx.cancelled.is_set():
                await _record_skip(env, check, "the run was aborted", StepStatus.ABORTED)
            elif level in skip_levels:
                await _record_skip(env, check, SKIPPED_BY_DEFINITION, StepStatus.SKIPPED)
            elif failed_level is not None:
                reason = f"level {failed_level} failed"
                await _record_skip(env, check, reason, StepStatus.SKIPPED)
            else:
                failure = await _run_check(check, env)
                if failure is not None:
                    failures.append(failure)
        if failures and failed_level is None:
            failed_level = level
    return ChecksResult(tuple(failures), aborted=env.ctx.cancelled.is_set())


async def skip_checks(
    checks: Sequence[job_pb2.VerificationCheck],
    reason: str,
    status: StepStatus,
    env: CheckEnvironment,
) -> None:
    """Record every check skipped (the iteration's process failed or the run was aborted)."""
    for _, group in ordered_levels(checks):
        for check in group:
            await _record_skip(env, check, reason, status)


async def _run_check(
    check: job_pb2.VerificationCheck, env: CheckEnvironment
) -> CheckFailure | None:
    settings = env.settings
    timeout = _check_timeout(check, settings)
    started_at = env.clock.now()
    result = await run_process(
        list(check.argv),
        cwd=env.workspace,
        env=env.env,
        timeout_seconds=timeout,
        cancelled=env.ctx.cancelled,
        max_output_bytes=settings.max_output_bytes,
        kill_grace=settings.kill_grace_seconds,
    )
    output = env.scrubber.bytes_(_combined(result))
    ref = await env.ctx.save_output(
        f"iteration {env.iteration} check {check.name}",
        output,
        truncated=result.stdout.truncated or result.stderr.truncated,
    )
    passed = result.exit_code == 0 and not result.timed_out and not result.aborted
    status = StepStatus.SUCCEEDED if passed else StepStatus.FAILED
    if result.aborted:
        status = StepStatus.ABORTED
    attributes = _check_attributes(check, result, ref, env)
    await env.ctx.record_step(
        Step(StepKind.CHECK, check.name, status, started_at, env.clock.now(), attributes)
    )
    if passed or result.aborted:
        return None
    last = tail(output, settings.feedback_max_bytes).decode("utf-8", errors="replace")
    return CheckFailure(
        check.name, check.level, result.exit_code, last or result.start_error, result.timed_out
    )


def _check_timeout(check: job_pb2.VerificationCheck, settings: RunnerSettings) -> float:
    timeout = settings.check_timeout_seconds
    if check.HasField("timeout") and check.timeout.ToTimedelta().total_seconds() > 0:
        timeout = check.timeout.ToTimedelta().total_seconds()
    return min(timeout, settings.command_max_timeout_seconds)


def _check_attributes(
    check: job_pb2.VerificationCheck, result: ProcessResult, ref: str, env: CheckEnvironment
) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "level": check.level,
        "argv": [env.scrubber.text(arg) for arg in check.argv],
        "exit_code": result.exit_code,
        "output": ref,
        "iteration": env.iteration,
        "timed_out": result.timed_out,
        "duration_ms": result.duration_ms,
    }
    if result.start_error:
        attributes["start_error"] = result.start_error
    return attributes


def _combined(result: ProcessResult) -> bytes:
    stdout, stderr = result.stdout.value(), result.stderr.value()
    if stdout and stderr:
        return stdout + b"\n--- stderr ---\n" + stderr
    return stdout or stderr or result.start_error.encode()


async def _record_skip(
    env: CheckEnvironment, check: job_pb2.VerificationCheck, reason: str, status: StepStatus
) -> None:
    now = env.clock.now()
    attributes = {"level": check.level, "reason": reason, "iteration": env.iteration}
    await env.ctx.record_step(Step(StepKind.CHECK, check.name, status, now, now, attributes))
