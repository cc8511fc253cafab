"""The advisor's answer: its JSON schema, parsing, validation, classification, salvage.

Pure functions, no I/O. An answer goes through three gates, and the first one
it fails names its classification:

1. content: no choices or blank content -> `empty_response`;
2. syntax and schema: not JSON, not an object, wrong or missing fields ->
   `schema_parse_error`; only enum violations -> `invalid_enum_value`;
3. the job's rules: duplicate endpoints or a dependency on an endpoint the plan
   leaves out -> `structural_inconsistency`; unknown endpoints, a dependency the
   job requires but the plan omits, cycles, a next run outside [min, max] ->
   `semantic_violation`.

Salvage (only when the job allows partial plans) removes endpoints, never
invents or changes values: unknown endpoints, endpoints in a cycle, and every
endpoint that (transitively) depends on a removed one are dropped. Duplicates
and an out-of-bounds next run are not salvageable: which duplicate was meant,
or what delay the model would have chosen within bounds, cannot be known, and
clamping would present a guess as the model's advice.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from jsonschema import Draft202012Validator

from conveyor_scheduler.advisor.types import AdvisorPlan, AdvisorRequest, Classification

CONFIDENCE_VALUES = ("low", "medium", "high")

ANSWER_SCHEMA: Mapping[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["endpoints", "next_run_in_seconds", "confidence", "reason"],
    "properties": {
        "endpoints": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["name", "depends_on"],
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "depends_on": {"type": "array", "items": {"type": "string", "minLength": 1}},
                },
            },
        },
        "next_run_in_seconds": {"type": "number", "minimum": 0},
        "confidence": {"enum": list(CONFIDENCE_VALUES)},
        "reason": {"type": "string"},
    },
}

_VALIDATOR = Draft202012Validator(ANSWER_SCHEMA)
_FENCE = re.compile(r"^```[a-zA-Z0-9_-]*\s*\n?(.*?)\n?\s*```$", re.DOTALL)
# Enough to tell the model what to fix without flooding the repair prompt.
_MAX_LISTED_ISSUES = 10


@dataclass(frozen=True, slots=True)
class Verdict:
    """What became of one answer.

    Attributes:
        plan: the plan when the answer is valid as given.
        classification: why it is not, when it is not.
        issues: human-readable problems, sent back to the model in a repair.
        salvage: the plan left after dropping invalid parts, when that is safe.
    """

    plan: AdvisorPlan | None
    classification: Classification | None = None
    issues: tuple[str, ...] = ()
    salvage: AdvisorPlan | None = None


@dataclass(frozen=True, slots=True)
class _Issue:
    classification: Classification
    message: str
    # Endpoints whose removal resolves the issue; None: removal cannot.
    drop: frozenset[str] | None


def evaluate(content: str | None, request: AdvisorRequest, max_reason_length: int) -> Verdict:
    """Judge one answer's content against the schema and `request`'s rules."""
    if content is None or not content.strip():
        return Verdict(None, Classification.EMPTY_RESPONSE, ("the answer was empty",))
    document, problem = parse_document(content)
    if problem is not None:
        return Verdict(None, Classification.SCHEMA_PARSE_ERROR, (problem,))
    schema_verdict = check_schema(document)
    if schema_verdict is not None:
        return schema_verdict
    return check_semantics(document, request, max_reason_length)


def parse_document(content: str) -> tuple[Any, str | None]:
    """JSON value of `content` (a ``` fence around it tolerated), or a problem."""
    text = content.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    try:
        document = json.loads(text, parse_constant=_reject_constant)
    except ValueError as error:
        return None, f"the answer is not valid JSON ({error})"
    except RecursionError:  # nesting deeper than the parser's stack: hostile or broken
        return None, "the answer is not valid JSON (nested too deeply)"
    if not isinstance(document, dict):
        return None, f"the answer must be a JSON object, not {type(document).__name__}"
    return document, None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def check_schema(document: Any) -> Verdict | None:
    """A verdict naming every schema violation, or None when the document fits."""
    errors = sorted(_VALIDATOR.iter_errors(document), key=lambda error: list(error.path))
    if not errors:
        return None
    messages = tuple(f"{_json_path(e.path)}: {e.message}" for e in errors[:_MAX_LISTED_ISSUES])
    only_enum = all(error.validator == "enum" for error in errors)
    kind = Classification.INVALID_ENUM_VALUE if only_enum else Classification.SCHEMA_PARSE_ERROR
    return Verdict(None, kind, messages)


def _json_path(path: Iterable[Any]) -> str:
    text = "$"
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def check_semantics(
    document: Mapping[str, Any], request: AdvisorRequest, max_reason_length: int
) -> Verdict:
    """Apply the job's rules to a schema-valid document."""
    names = [entry["name"] for entry in document["endpoints"]]
    plan_deps = {e["name"]: tuple(dict.fromkeys(e["depends_on"])) for e in document["endpoints"]}
    job_deps = {endpoint.name: endpoint.depends_on for endpoint in request.endpoints}
    # Compared before any float() conversion: a huge integer would overflow it.
    seconds: float = document["next_run_in_seconds"]
    issues = [
        *_duplicate_issues(names),
        *_membership_issues(names, plan_deps, job_deps),
        *_cycle_issues(names, _edges(names, plan_deps, job_deps)),
        *_bounds_issues(seconds, request),
    ]
    reason = document["reason"][:max_reason_length]
    confidence = document["confidence"]
    if not issues:
        ordered = _topological(names, _edges(names, plan_deps, job_deps))
        return Verdict(_plan(ordered, seconds, reason, confidence))
    structural = any(i.classification is Classification.STRUCTURAL_INCONSISTENCY for i in issues)
    kind = (
        Classification.STRUCTURAL_INCONSISTENCY if structural else Classification.SEMANTIC_VIOLATION
    )
    listed = tuple(issue.message for issue in issues[:_MAX_LISTED_ISSUES])
    salvage = _salvage(names, plan_deps, job_deps, issues, seconds, reason, confidence)
    return Verdict(None, kind, listed, salvage)


def _plan(names: Sequence[str], seconds: float, reason: str, confidence: str) -> AdvisorPlan:
    return AdvisorPlan(tuple(names), timedelta(seconds=float(seconds)), reason, confidence)


def _duplicate_issues(names: Sequence[str]) -> list[_Issue]:
    seen: set[str] = set()
    issues = []
    for name in names:
        if name in seen:
            message = f"endpoint {name!r} is listed more than once"
            issues.append(_Issue(Classification.STRUCTURAL_INCONSISTENCY, message, None))
        seen.add(name)
    return issues


def _membership_issues(
    names: Sequence[str],
    plan_deps: Mapping[str, Sequence[str]],
    job_deps: Mapping[str, Sequence[str]],
) -> list[_Issue]:
    """Unknown endpoints, dependencies outside the plan, job dependencies left out."""
    in_plan = set(names)
    issues = []
    semantic, structural = (
        Classification.SEMANTIC_VIOLATION,
        Classification.STRUCTURAL_INCONSISTENCY,
    )
    for name in dict.fromkeys(names):
        drop = frozenset({name})
        if name not in job_deps:
            issues.append(
                _Issue(semantic, f"endpoint {name!r} is not an endpoint of the job", drop)
            )
            continue
        for dep in plan_deps[name]:
            if dep not in job_deps:
                message = (
                    f"endpoint {name!r} depends on {dep!r}, which is not an endpoint of the job"
                )
                issues.append(_Issue(semantic, message, drop))
            elif dep not in in_plan:
                message = f"endpoint {name!r} depends on {dep!r}, which the plan does not include"
                issues.append(_Issue(structural, message, drop))
        for dep in job_deps[name]:
            if dep not in in_plan:
                message = (
                    f"endpoint {name!r} requires {dep!r} (a job dependency), "
                    "which the plan leaves out"
                )
                issues.append(_Issue(semantic, message, drop))
    return issues


def _edges(
    names: Sequence[str],
    plan_deps: Mapping[str, Sequence[str]],
    job_deps: Mapping[str, Sequence[str]],
) -> dict[str, tuple[str, ...]]:
    """Dependencies among the plan's endpoints: the model's and the job's own."""
    in_plan = set(names)
    edges = {}
    for name in dict.fromkeys(names):
        deps = (*plan_deps.get(name, ()), *job_deps.get(name, ()))
        edges[name] = tuple(dep for dep in dict.fromkeys(deps) if dep in in_plan)
    return edges


def _cycle_issues(names: Sequence[str], edges: Mapping[str, Sequence[str]]) -> list[_Issue]:
    issues = []
    for component in _cyclic_components(edges):
        ordered = [name for name in dict.fromkeys(names) if name in component]
        cycle = " -> ".join([*ordered, ordered[0]])
        message = f"dependency cycle among endpoints: {cycle}"
        issues.append(_Issue(Classification.SEMANTIC_VIOLATION, message, frozenset(component)))
    return issues


def _cyclic_components(edges: Mapping[str, Sequence[str]]) -> list[set[str]]:
    """Strongly connected components that contain a cycle (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(edges[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(edges[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1 or node in edges[node]:
                    found.append(component)
    return found


def _bounds_issues(seconds: float, request: AdvisorRequest) -> list[_Issue]:
    low = request.min_next_run.total_seconds()
    high = request.max_next_run.total_seconds()
    if low <= seconds <= high:
        return []
    huge = isinstance(seconds, int) and seconds > 10**15  # `:g` would convert it to float
    shown = f"an integer of {len(str(seconds))} digits" if huge else f"{seconds:g}"
    message = f"next_run_in_seconds is {shown}; it must be between {low:g} and {high:g}"
    return [_Issue(Classification.SEMANTIC_VIOLATION, message, None)]


def _salvage(
    names: Sequence[str],
    plan_deps: Mapping[str, Sequence[str]],
    job_deps: Mapping[str, Sequence[str]],
    issues: Sequence[_Issue],
    seconds: float,
    reason: str,
    confidence: str,
) -> AdvisorPlan | None:
    """The plan left after dropping what the issues name, or None when unsafe or empty."""
    if any(issue.drop is None for issue in issues):
        return None
    dropped: set[str] = set().union(*(issue.drop for issue in issues if issue.drop))
    kept = [name for name in dict.fromkeys(names) if name not in dropped]
    changed = True
    while changed:  # drop dependents of dropped endpoints until nothing changes
        keep_set = set(kept)
        survivors = [
            name
            for name in kept
            if all(dep in keep_set for dep in (*plan_deps[name], *job_deps[name]))
        ]
        changed = len(survivors) != len(kept)
        kept = survivors
    if not kept:
        return None
    ordered = _topological(kept, _edges(kept, plan_deps, job_deps))
    return _plan(ordered, seconds, reason, confidence)


def _topological(names: Sequence[str], edges: Mapping[str, Sequence[str]]) -> list[str]:
    """The model's order, each endpoint's dependencies pulled ahead of it (edges acyclic)."""
    placed: dict[str, None] = {}

    def place(name: str) -> None:
        if name in placed:
            return
        for dep in edges[name]:
            place(dep)
        placed[name] = None

    for name in names:
        place(name)
    return list(placed)
