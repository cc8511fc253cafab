"""Loop strategy decisions of command jobs (pure)."""

from __future__ import annotations

from conveyor.common.v1 import job_pb2
from conveyor_executor.runners.loop import Decision, IterationVerdict, decide, loop_bounds
from conveyor_executor.runners.settings import RunnerSettings

SETTINGS = RunnerSettings(max_iterations=10, default_max_iterations=4)


def policy(strategy: int, iterations: int = 0, max_iterations: int = 0) -> job_pb2.LoopPolicy:
    return job_pb2.LoopPolicy(
        strategy=strategy, iterations=iterations, max_iterations=max_iterations
    )


def run_loop(loop: job_pb2.LoopPolicy | None, passes: set[int]) -> list[tuple[Decision, str]]:
    """Decisions of a whole loop whose iterations in `passes` pass."""
    bounds = loop_bounds(loop, SETTINGS)
    decisions = []
    index = 0
    while True:
        index += 1
        decision = decide(bounds, IterationVerdict(index, passed=index in passes))
        decisions.append(decision)
        if decision[0] is Decision.STOP:
            return decisions


def test_no_policy_is_one_iteration() -> None:
    decisions = run_loop(None, passes=set())
    assert [d for d, _ in decisions] == [Decision.STOP]


def test_fixed_runs_exactly_n_whatever_the_verdicts() -> None:
    decisions = run_loop(policy(job_pb2.LOOP_STRATEGY_FIXED, iterations=3), passes={1})
    assert [d for d, _ in decisions] == [Decision.CONTINUE, Decision.CONTINUE, Decision.STOP]
    assert decisions[0][1] == "fixed loop: iteration 1 of 3 done"
    assert decisions[-1][1] == "fixed loop: all 3 iteration(s) done"


def test_fixed_is_capped_by_the_settings() -> None:
    decisions = run_loop(policy(job_pb2.LOOP_STRATEGY_FIXED, iterations=500), passes=set())
    assert len(decisions) == 10


def test_until_verified_stops_at_the_first_pass() -> None:
    decisions = run_loop(policy(job_pb2.LOOP_STRATEGY_UNTIL_VERIFIED, max_iterations=5), {3})
    assert [d for d, _ in decisions] == [Decision.CONTINUE, Decision.CONTINUE, Decision.STOP]
    assert decisions[0][1].startswith("not verified at iteration 1")
    assert decisions[-1][1] == "verified at iteration 3"


def test_until_verified_gives_up_at_its_cap_defaulting_to_the_settings() -> None:
    decisions = run_loop(policy(job_pb2.LOOP_STRATEGY_UNTIL_VERIFIED), passes=set())
    assert len(decisions) == 4  # default_max_iterations
    assert decisions[-1][1] == "not verified after the maximum of 4 iteration(s)"


def test_hybrid_makes_its_minimum_then_loops_until_verified() -> None:
    loop = policy(job_pb2.LOOP_STRATEGY_HYBRID, iterations=2, max_iterations=5)
    early_pass = run_loop(loop, passes={1, 2})
    assert [d for d, _ in early_pass] == [Decision.CONTINUE, Decision.STOP]
    assert early_pass[0][1] == "hybrid loop: 2 iterations required, 1 done"
    late_pass = run_loop(loop, passes={4})
    assert len(late_pass) == 4 and late_pass[-1][1] == "verified at iteration 4"
    never = run_loop(loop, passes=set())
    assert len(never) == 5


def test_timeout_and_abort_stop_any_loop() -> None:
    bounds = loop_bounds(policy(job_pb2.LOOP_STRATEGY_FIXED, iterations=5), SETTINGS)
    timed_out = decide(bounds, IterationVerdict(1, passed=False, timed_out=True))
    assert timed_out == (Decision.STOP, "iteration 1 timed out; another would be cut the same way")
    aborted = decide(bounds, IterationVerdict(2, passed=False, aborted=True))
    assert aborted == (Decision.STOP, "iteration 2 was aborted")
