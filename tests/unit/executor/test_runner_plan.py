"""Plan selection and dependency-graph checks of the HTTP runner (pure)."""

from __future__ import annotations

import pytest

from conveyor.common.v1 import job_pb2
from conveyor_executor.domain.failure import ErrorType
from conveyor_executor.runners.plan import PlanInvalid, blocked_by, build_plan, check_graph


def target(*specs: tuple[str, list[str]], mode: int = job_pb2.PLAN_MODE_DAG) -> job_pb2.HttpTarget:
    return job_pb2.HttpTarget(
        mode=mode,
        endpoints=[
            job_pb2.HttpEndpoint(name=name, method="GET", url="http://x/", depends_on=deps)
            for name, deps in specs
        ],
    )


def test_empty_selection_means_every_endpoint_in_definition_order() -> None:
    plan = build_plan(target(("b", []), ("a", ["b"]), ("c", [])), [])
    assert plan.names == ("b", "a", "c")
    assert plan.left_out == ()


def test_selection_keeps_definition_order_and_lists_the_rest() -> None:
    plan = build_plan(target(("a", []), ("b", []), ("c", [])), ["c", "a"])
    assert plan.names == ("a", "c")
    assert plan.left_out == ("b",)


def test_unknown_selected_endpoint_is_invalid_input_naming_it() -> None:
    with pytest.raises(PlanInvalid) as caught:
        build_plan(target(("a", [])), ["a", "nope"])
    assert caught.value.error.type is ErrorType.INVALID_INPUT
    assert not caught.value.error.retryable
    assert "nope" in caught.value.error.message


def test_duplicate_names_and_empty_jobs_are_refused() -> None:
    with pytest.raises(PlanInvalid, match="defined twice"):
        build_plan(target(("a", []), ("a", [])), [])
    with pytest.raises(PlanInvalid, match="no endpoints"):
        build_plan(job_pb2.HttpTarget(), [])


def test_cycle_is_reported_with_its_path() -> None:
    with pytest.raises(PlanInvalid) as caught:
        build_plan(target(("a", ["c"]), ("b", ["a"]), ("c", ["b"]), ("d", [])), [])
    message = str(caught.value)
    assert "dependency cycle" in message
    assert "a -> c -> b -> a" in message


def test_self_dependency_and_unknown_dependency_are_refused() -> None:
    with pytest.raises(PlanInvalid, match="itself"):
        check_graph({"a": ["a"]})
    with pytest.raises(PlanInvalid, match="unknown endpoint 'ghost'"):
        check_graph({"a": ["ghost"]})


def test_cycles_only_matter_for_dag_plans() -> None:
    plan = build_plan(target(("a", ["b"]), ("b", ["a"]), mode=job_pb2.PLAN_MODE_SEQUENTIAL), [])
    assert plan.names == ("a", "b")


def test_topological_order_puts_dependencies_first() -> None:
    order = check_graph({"d": ["b", "c"], "c": ["a"], "b": ["a"], "a": []})
    assert order.index("a") < order.index("b") < order.index("d")
    assert order.index("c") < order.index("d")


def test_blocked_by_explains_failed_and_unselected_dependencies() -> None:
    endpoint = job_pb2.HttpEndpoint(name="d", depends_on=["a", "b"])
    selected = {"a", "b", "d"}
    assert blocked_by(endpoint, succeeded=set(), finished=set(), selected=selected) is None
    assert blocked_by(endpoint, {"a"}, {"a"}, selected) is None  # b still to come
    reason = blocked_by(endpoint, {"a"}, {"a", "b"}, selected)
    assert reason == "dependency 'b' did not succeed"
    assert blocked_by(endpoint, set(), set(), {"a", "d"}) == (
        "dependency 'b' is not in this run's plan"
    )
