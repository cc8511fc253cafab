"""Which endpoints a run calls and in what order: selection and graph checks (pure).

A run calls the endpoints named by its invocation (all when none are named).
For a DAG plan, an endpoint runs once each of its `depends_on` succeeded; a
dependency that failed, was skipped, or is not selected for this run skips
the dependent (running it without its prerequisite could act on stale data).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from conveyor.common.v1 import job_pb2
from conveyor_executor.domain.failure import ClassifiedError, ErrorType


class PlanInvalid(Exception):
    """The plan cannot run as defined (unknown names, duplicates, a cycle)."""

    def __init__(self, message: str, **details: str) -> None:
        super().__init__(message)
        self.error = ClassifiedError.of(ErrorType.INVALID_INPUT, message, **details)


@dataclass(frozen=True)
class Plan:
    """The endpoints of one run, in definition order, and the ones left out."""

    endpoints: tuple[job_pb2.HttpEndpoint, ...]
    left_out: tuple[str, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(endpoint.name for endpoint in self.endpoints)


def build_plan(target: job_pb2.HttpTarget, selected: Sequence[str]) -> Plan:
    """The run's plan: `selected` endpoints (all when empty), checked for consistency.

    Raises:
        PlanInvalid: duplicate endpoint names, an unknown selected name, an
            unknown dependency, or (DAG plans) a dependency cycle.
    """
    by_name: dict[str, job_pb2.HttpEndpoint] = {}
    for endpoint in target.endpoints:
        if endpoint.name in by_name:
            raise PlanInvalid(f"endpoint name {endpoint.name!r} is defined twice")
        by_name[endpoint.name] = endpoint
    if not by_name:
        raise PlanInvalid("the job defines no endpoints")
    unknown = [name for name in selected if name not in by_name]
    if unknown:
        raise PlanInvalid(
            f"endpoints not defined by the job: {', '.join(unknown)}", endpoints=",".join(unknown)
        )
    if target.mode == job_pb2.PLAN_MODE_DAG:
        graph = {name: list(endpoint.depends_on) for name, endpoint in by_name.items()}
        check_graph(graph)
    wanted = set(selected) or set(by_name)
    chosen = tuple(e for e in target.endpoints if e.name in wanted)
    left_out = tuple(e.name for e in target.endpoints if e.name not in wanted)
    return Plan(chosen, left_out)


def check_graph(graph: Mapping[str, Sequence[str]]) -> list[str]:
    """A topological order of `graph` (name -> dependencies).

    Raises:
        PlanInvalid: a dependency names no node, or the graph has a cycle
            (the message lists it, e.g. "a -> b -> a").
    """
    for name, deps in graph.items():
        for dep in deps:
            if dep not in graph:
                raise PlanInvalid(f"endpoint {name!r} depends on unknown endpoint {dep!r}")
            if dep == name:
                raise PlanInvalid(f"endpoint {name!r} depends on itself")
    order: list[str] = []
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    for root in graph:
        _visit(root, graph, state, [], order)
    return order


def _visit(
    name: str,
    graph: Mapping[str, Sequence[str]],
    state: dict[str, int],
    path: list[str],
    order: list[str],
) -> None:
    # Iterative depth-first search would avoid recursion limits, but plans are
    # bounded by the scheduler's endpoints-per-job limit (far below 1000).
    if state.get(name) == 2:
        return
    if state.get(name) == 1:
        cycle = [*path[path.index(name) :], name]
        raise PlanInvalid(f"dependency cycle: {' -> '.join(cycle)}", cycle=",".join(cycle))
    state[name] = 1
    path.append(name)
    for dep in graph[name]:
        _visit(dep, graph, state, path, order)
    path.pop()
    state[name] = 2
    order.append(name)


def blocked_by(
    endpoint: job_pb2.HttpEndpoint, succeeded: set[str], finished: set[str], selected: set[str]
) -> str | None:
    """Why `endpoint` can never run (a reason), or None when it can or may later."""
    for dep in endpoint.depends_on:
        if dep not in selected:
            return f"dependency {dep!r} is not in this run's plan"
        if dep in finished and dep not in succeeded:
            return f"dependency {dep!r} did not succeed"
    return None


def ready(endpoint: job_pb2.HttpEndpoint, succeeded: set[str]) -> bool:
    return all(dep in succeeded for dep in endpoint.depends_on)
