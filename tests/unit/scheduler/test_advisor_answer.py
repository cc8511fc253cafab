"""The advisor's answer judgement (pure): every fixture's classification and salvage."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from conveyor_scheduler.advisor import AdvisorPlan, Classification
from conveyor_scheduler.advisor.answer import ANSWER_SCHEMA, evaluate, parse_document
from tests.fixtures.advisor import AnswerCase, fixture_request, load_cases, valid_answer

CASES = load_cases()
CONTENT_CASES = [case for case in CASES if case.envelope is None]


def test_fixture_suite_covers_every_answer_classification() -> None:
    met = {case.classification for case in CASES}
    answer_kinds = set(Classification) - {
        Classification.REPAIR_FAILED,
        Classification.PROVIDER_ERROR,
    }
    assert answer_kinds <= met
    assert None in met  # and valid answers, so the judge is not simply "reject all"


@pytest.mark.parametrize("case", CONTENT_CASES, ids=lambda case: case.name)
def test_fixture_is_classified(case: AnswerCase) -> None:
    verdict = evaluate(case.content, fixture_request(), max_reason_length=500)

    if case.classification is None:
        assert verdict.classification is None
        assert verdict.plan is not None and verdict.plan.endpoints == case.plan
    else:
        assert verdict.plan is None
        assert verdict.classification == case.classification
        assert verdict.issues, "a rejected answer must say what was wrong"
        salvaged = verdict.salvage.endpoints if verdict.salvage else None
        assert salvaged == case.salvage


def test_valid_answer_becomes_a_plan_with_its_values() -> None:
    verdict = evaluate(valid_answer(seconds=90.5, confidence="low"), fixture_request(), 500)

    assert verdict.plan == AdvisorPlan(
        ("fetch", "transform"), timedelta(seconds=90.5), "recent runs found work", "low"
    )


def test_bounds_are_inclusive() -> None:
    request = fixture_request()
    low = evaluate(valid_answer(seconds=60), request, 500)
    high = evaluate(valid_answer(seconds=3600), request, 500)
    assert low.plan is not None and high.plan is not None


def test_reason_is_cut_to_the_limit() -> None:
    content = json.loads(valid_answer())
    content["reason"] = "x" * 50
    verdict = evaluate(json.dumps(content), fixture_request(), max_reason_length=10)
    assert verdict.plan is not None and verdict.plan.reason == "x" * 10


def test_issues_name_the_problem_for_the_repair_prompt() -> None:
    content = json.dumps(
        {
            "endpoints": [
                {"name": "fetch", "depends_on": []},
                {"name": "drop_db", "depends_on": []},
            ],
            "next_run_in_seconds": 7,
            "confidence": "high",
            "reason": "r",
        }
    )
    verdict = evaluate(content, fixture_request(), 500)

    assert verdict.classification is Classification.SEMANTIC_VIOLATION
    joined = " ".join(verdict.issues)
    assert "'drop_db' is not an endpoint of the job" in joined
    assert "between 60 and 3600" in joined
    assert verdict.salvage is None  # the out-of-bounds delay makes salvage unsafe


def test_schema_issues_carry_the_json_path() -> None:
    content = json.dumps(
        {
            "endpoints": [{"name": 5, "depends_on": []}],
            "next_run_in_seconds": 600,
            "confidence": "high",
            "reason": "r",
        }
    )
    verdict = evaluate(content, fixture_request(), 500)
    assert verdict.classification is Classification.SCHEMA_PARSE_ERROR
    assert any(issue.startswith("$.endpoints[0].name:") for issue in verdict.issues)


def test_long_cycles_are_reported_with_their_members() -> None:
    request = fixture_request()
    content = json.dumps(
        {
            "endpoints": [
                {"name": "notify", "depends_on": ["publish"]},
                {"name": "fetch", "depends_on": ["notify"]},
                {"name": "transform", "depends_on": ["fetch"]},
                {"name": "publish", "depends_on": ["transform"]},
            ],
            "next_run_in_seconds": 600,
            "confidence": "medium",
            "reason": "r",
        }
    )
    verdict = evaluate(content, request, 500)
    assert verdict.classification is Classification.SEMANTIC_VIOLATION
    (cycle,) = [issue for issue in verdict.issues if "cycle" in issue]
    for name in ("notify", "fetch", "transform", "publish"):
        assert name in cycle
    assert verdict.salvage is None  # every endpoint is in the cycle: nothing left


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"a": 1}', {"a": 1}),
        ('```json\n{"a": 1}\n```', {"a": 1}),
        ('```\n{"a": 1}\n```', {"a": 1}),
        ('  ```JSON {"a": 1}```  ', {"a": 1}),
    ],
)
def test_code_fences_are_tolerated(content: str, expected: dict) -> None:
    assert parse_document(content) == (expected, None)


def test_text_around_a_fence_is_not_json() -> None:
    document, problem = parse_document('Here you go:\n```json\n{"a": 1}\n```')
    assert document is None and problem is not None


def test_schema_has_an_enum_so_invalid_enum_value_can_happen() -> None:
    assert ANSWER_SCHEMA["properties"]["confidence"]["enum"] == ["low", "medium", "high"]
