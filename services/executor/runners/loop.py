"""Loop strategies of command jobs: iterate again or stop, always with a reason (pure).

* FIXED: exactly `iterations` iterations (default 1).
* UNTIL_VERIFIED: until an iteration passes (exit 0 and every check that ran
  passed), at most `max_iterations`.
* HYBRID: at least `iterations`, then until an iteration passes, at most
  `max_iterations`.
* UNSPECIFIED (no loop policy): one iteration.

Whatever the strategy, a timed-out or aborted iteration stops the loop: the
next iteration would be cut the same way (timeout) or is not wanted (abort).
A failed iteration that is not the last still feeds its failures to the next.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from conveyor.common.v1 import job_pb2
from conveyor_executor.runners.settings import RunnerSettings


class Decision(enum.StrEnum):
    CONTINUE = "continue"
    STOP = "stop"


@dataclass(frozen=True)
class LoopBounds:
    strategy: int  # a job_pb2.LoopStrategy value
    minimum: int  # iterations always made (FIXED: exactly these)
    maximum: int  # iterations never exceeded


@dataclass(frozen=True)
class IterationVerdict:
    """What one iteration came to, as the loop strategy sees it."""

    index: int  # 1-based
    passed: bool
    timed_out: bool = False
    aborted: bool = False


def loop_bounds(policy: job_pb2.LoopPolicy | None, settings: RunnerSettings) -> LoopBounds:
    """The effective bounds of `policy` (None = one iteration), capped by the settings."""
    cap = settings.max_iterations
    policy = policy if policy is not None else job_pb2.LoopPolicy()
    strategy = policy.strategy
    if strategy == job_pb2.LOOP_STRATEGY_FIXED:
        count = min(max(1, policy.iterations), cap)
        return LoopBounds(strategy, count, count)
    if strategy in (job_pb2.LOOP_STRATEGY_UNTIL_VERIFIED, job_pb2.LOOP_STRATEGY_HYBRID):
        maximum = min(policy.max_iterations or settings.default_max_iterations, cap)
        minimum = 1
        if strategy == job_pb2.LOOP_STRATEGY_HYBRID:
            minimum = min(max(1, policy.iterations), maximum)
        return LoopBounds(strategy, minimum, max(1, maximum))
    return LoopBounds(job_pb2.LOOP_STRATEGY_UNSPECIFIED, 1, 1)


def decide(bounds: LoopBounds, verdict: IterationVerdict) -> tuple[Decision, str]:
    """Whether to iterate after `verdict`, and why (the reason is recorded as is)."""
    i = verdict.index
    if verdict.aborted:
        return Decision.STOP, f"iteration {i} was aborted"
    if verdict.timed_out:
        return Decision.STOP, f"iteration {i} timed out; another would be cut the same way"
    if bounds.strategy in (job_pb2.LOOP_STRATEGY_FIXED, job_pb2.LOOP_STRATEGY_UNSPECIFIED):
        if i < bounds.minimum:
            return Decision.CONTINUE, f"fixed loop: iteration {i} of {bounds.minimum} done"
        return Decision.STOP, f"fixed loop: all {bounds.minimum} iteration(s) done"
    if i < bounds.minimum:
        return Decision.CONTINUE, (f"hybrid loop: {bounds.minimum} iterations required, {i} done")
    if verdict.passed:
        return Decision.STOP, f"verified at iteration {i}"
    if i < bounds.maximum:
        return (
            Decision.CONTINUE,
            f"not verified at iteration {i}; trying again ({i}/{bounds.maximum} used)",
        )
    return Decision.STOP, f"not verified after the maximum of {bounds.maximum} iteration(s)"
