"""The advisor against a fake OpenAI-compatible provider over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from conveyor_core.clock import ManualClock
from conveyor_scheduler.advisor import (
    Advisor,
    AdvisorOutcome,
    AdvisorPlan,
    AdvisorSettings,
    OutcomeResult,
)
from tests.fixtures.advisor import (
    NOW,
    AnswerCase,
    fixture_request,
    history_of,
    load_cases,
    valid_answer,
)
from tests.helpers.fake_llm import FakeLLM
from tests.helpers.metrics import metric_value

API_KEY = "sk-test-advisor-key"
BAD = "I would run fetch in ten minutes."  # not JSON: schema_parse_error


@pytest.fixture
def llm() -> Iterator[FakeLLM]:
    with FakeLLM() as server:
        yield server


def settings_for(llm: FakeLLM, **overrides: Any) -> AdvisorSettings:
    values: dict[str, Any] = {
        "enabled": True,
        "base_url": llm.base_url,
        "model": "fake-model",
        "api_key": API_KEY,
        "timeout_seconds": 5.0,
    }
    return AdvisorSettings(**(values | overrides))


@pytest.fixture
async def advisor(llm: FakeLLM) -> AsyncIterator[Advisor]:
    instance = Advisor(settings_for(llm), ManualClock(NOW))
    yield instance
    await instance.close()


async def advise_once(llm: FakeLLM, request_job: str, **overrides: Any) -> AdvisorOutcome:
    allow_partial = overrides.pop("allow_partial", False)
    instance = Advisor(settings_for(llm, **overrides), ManualClock(NOW))
    try:
        return await instance.advise(fixture_request(job=request_job, allow_partial=allow_partial))
    finally:
        await instance.close()


def script(llm: FakeLLM, case: AnswerCase) -> None:
    if case.envelope is not None:
        llm.envelope(case.envelope)
    else:
        llm.answer(case.content, prompt_tokens=100, completion_tokens=20)


@pytest.mark.parametrize("case", load_cases(), ids=lambda case: case.name)
async def test_every_fixture_is_classified_over_http(llm: FakeLLM, case: AnswerCase) -> None:
    script(llm, case)
    outcome = await advise_once(llm, f"fixture-{case.name}", max_repairs=0)

    if case.classification is None:
        assert outcome.plan is not None and outcome.plan.endpoints == case.plan
        assert outcome.classifications == ()
        assert outcome.result is OutcomeResult.ACCEPTED
    else:
        assert outcome.plan is None
        assert outcome.classifications == (case.classification, "repair_failed")
        assert outcome.fallback_reason == "repair_failed"
    assert len(llm.requests) == 1


@pytest.mark.parametrize(
    "case", [c for c in load_cases() if c.salvage is not None], ids=lambda case: case.name
)
async def test_salvageable_fixtures_are_salvaged_when_the_job_allows(
    llm: FakeLLM, case: AnswerCase
) -> None:
    script(llm, case)
    outcome = await advise_once(llm, f"salvage-{case.name}", max_repairs=0, allow_partial=True)

    assert outcome.salvaged is True and outcome.result is OutcomeResult.SALVAGED
    assert outcome.plan is not None and outcome.plan.endpoints == case.salvage
    assert outcome.fallback_reason is None
    assert outcome.classifications == (case.classification, "repair_failed")


async def test_accepted_plan_sends_key_model_and_reports_usage(
    llm: FakeLLM, advisor: Advisor, metric_reader: InMemoryMetricReader
) -> None:
    llm.answer(valid_answer("fetch", seconds=120), prompt_tokens=321, completion_tokens=45)

    outcome = await advisor.advise(fixture_request(job="job-accepted"))

    assert outcome == AdvisorOutcome(
        plan=AdvisorPlan(("fetch",), timedelta(seconds=120), "recent runs found work", "high"),
        input_tokens=321,
        output_tokens=45,
        result=OutcomeResult.ACCEPTED,
    )
    (request,) = llm.requests
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert request.body["model"] == "fake-model"
    assert request.body["response_format"] == {"type": "json_object"}
    assert [m["role"] for m in request.messages] == ["system", "user"]
    job = {"job": "job-accepted"}
    assert metric_value(metric_reader, "conveyor.scheduler.advisor.outcomes", job) == 1
    assert (
        metric_value(
            metric_reader, "conveyor.scheduler.advisor.outcomes", job | {"result": "accepted"}
        )
        == 1
    )
    tokens = "conveyor.scheduler.advisor.tokens"
    assert metric_value(metric_reader, tokens, job | {"direction": "input"}) == 321
    assert metric_value(metric_reader, tokens, job | {"direction": "output"}) == 45


async def test_repair_names_the_problem_and_succeeds(
    llm: FakeLLM, advisor: Advisor, metric_reader: InMemoryMetricReader
) -> None:
    llm.answer(valid_answer("fetch", "drop_tables"), prompt_tokens=100, completion_tokens=10)
    llm.answer(valid_answer("fetch"), prompt_tokens=150, completion_tokens=12)

    outcome = await advisor.advise(fixture_request(job="job-repaired"))

    assert outcome.result is OutcomeResult.REPAIRED
    assert outcome.plan is not None and outcome.plan.endpoints == ("fetch",)
    assert outcome.classifications == ("semantic_violation",)
    assert outcome.repair_attempts == 1
    assert (outcome.input_tokens, outcome.output_tokens) == (250, 22)
    first, repair = llm.requests
    assert repair.messages[:2] == first.messages
    assert repair.messages[2] == {
        "role": "assistant",
        "content": valid_answer("fetch", "drop_tables"),
    }
    correction = repair.messages[3]["content"]
    assert "semantic_violation" in correction
    assert "'drop_tables' is not an endpoint of the job" in correction
    attrs = {"job": "job-repaired", "classification": "semantic_violation"}
    assert metric_value(metric_reader, "conveyor.scheduler.advisor.classifications", attrs) == 1
    assert (
        metric_value(
            metric_reader,
            "conveyor.scheduler.advisor.outcomes",
            {"job": "job-repaired", "result": "repaired"},
        )
        == 1
    )


async def test_repairs_exhausted_fall_back_with_every_classification(
    llm: FakeLLM, metric_reader: InMemoryMetricReader
) -> None:
    llm.answer(BAD, prompt_tokens=10, completion_tokens=1)
    llm.answer("", prompt_tokens=20, completion_tokens=0)
    llm.answer(valid_answer(seconds=5), prompt_tokens=30, completion_tokens=3)

    outcome = await advise_once(llm, "job-exhausted", max_repairs=2)

    assert outcome.plan is None
    assert outcome.fallback_reason == "repair_failed"
    assert outcome.classifications == (
        "schema_parse_error",
        "empty_response",
        "semantic_violation",
        "repair_failed",
    )
    assert outcome.repair_attempts == 2
    assert (outcome.input_tokens, outcome.output_tokens) == (60, 4)
    assert len(llm.requests) == 3  # the first request and N=2 follow-ups, no more
    assert "empty_response" in llm.requests[2].messages[-1]["content"]
    classifications = "conveyor.scheduler.advisor.classifications"
    for kind in ("schema_parse_error", "empty_response", "semantic_violation", "repair_failed"):
        attrs = {"job": "job-exhausted", "classification": kind}
        assert metric_value(metric_reader, classifications, attrs) == 1
    assert (
        metric_value(
            metric_reader,
            "conveyor.scheduler.advisor.outcomes",
            {"job": "job-exhausted", "result": "fallback"},
        )
        == 1
    )


async def test_partial_plan_is_not_used_when_the_job_does_not_allow_it(llm: FakeLLM) -> None:
    llm.answer(valid_answer("fetch", "drop_tables"))
    outcome = await advise_once(llm, "job-strict", max_repairs=0, allow_partial=False)
    assert outcome.plan is None and outcome.salvaged is False
    assert outcome.fallback_reason == "repair_failed"


async def test_salvage_comes_after_repairs_and_uses_the_latest_salvageable_answer(
    llm: FakeLLM, metric_reader: InMemoryMetricReader
) -> None:
    llm.answer(valid_answer("fetch", "transform", "drop_tables"))
    llm.answer(valid_answer("notify", "drop_tables"))
    llm.answer(BAD)  # not salvageable: the earlier salvage stands

    outcome = await advise_once(llm, "job-salvaged", max_repairs=2, allow_partial=True)

    assert outcome.result is OutcomeResult.SALVAGED and outcome.salvaged
    assert outcome.plan is not None and outcome.plan.endpoints == ("notify",)
    assert outcome.repair_attempts == 2 and len(llm.requests) == 3
    assert (
        metric_value(
            metric_reader,
            "conveyor.scheduler.advisor.outcomes",
            {"job": "job-salvaged", "result": "salvaged"},
        )
        == 1
    )


@pytest.mark.parametrize("status", [400, 401, 429, 500, 503])
async def test_http_errors_fall_back_without_repair(llm: FakeLLM, status: int) -> None:
    llm.error(status)
    outcome = await advise_once(llm, f"job-http-{status}")
    assert outcome.plan is None
    assert outcome.fallback_reason == "provider_error"
    assert outcome.classifications == ("provider_error",)
    assert outcome.repair_attempts == 0 and len(llm.requests) == 1


async def test_timeout_falls_back(llm: FakeLLM, metric_reader: InMemoryMetricReader) -> None:
    llm.hang()
    outcome = await advise_once(llm, "job-timeout", timeout_seconds=0.2)
    assert outcome.fallback_reason == "provider_error"
    assert outcome.classifications == ("provider_error",)
    attrs = {"job": "job-timeout", "classification": "provider_error"}
    assert metric_value(metric_reader, "conveyor.scheduler.advisor.classifications", attrs) == 1


async def test_provider_error_during_repair_keeps_tokens_spent(llm: FakeLLM) -> None:
    llm.answer(BAD, prompt_tokens=70, completion_tokens=7)
    llm.error(502)
    outcome = await advise_once(llm, "job-error-mid-repair")
    assert outcome.classifications == ("schema_parse_error", "provider_error")
    assert outcome.fallback_reason == "provider_error"
    assert (outcome.repair_attempts, outcome.input_tokens, outcome.output_tokens) == (1, 70, 7)


async def test_unreachable_provider_falls_back(llm: FakeLLM) -> None:
    settings = AdvisorSettings(enabled=True, base_url="http://127.0.0.1:1/v1", model="m")
    advisor = Advisor(settings, ManualClock(NOW))
    try:
        outcome = await advisor.advise(fixture_request(job="job-unreachable"))
    finally:
        await advisor.close()
    assert outcome.fallback_reason == "provider_error" and outcome.plan is None


@pytest.mark.parametrize(
    "body",
    [b"<html>bad gateway</html>", b"[]", b'{"choices": "none"}'],
    ids=["html", "array", "choices-not-a-list"],
)
async def test_malformed_envelope_is_a_provider_error(llm: FakeLLM, body: bytes) -> None:
    llm.raw(200, body)
    outcome = await advise_once(llm, "job-envelope")
    assert outcome.classifications == ("provider_error",)


async def test_oversized_response_is_refused(llm: FakeLLM) -> None:
    llm.answer(valid_answer() + " " * 5000)
    outcome = await advise_once(llm, "job-oversized", max_response_bytes=2048)
    assert outcome.classifications == ("provider_error",)
    assert outcome.plan is None


async def test_history_sent_is_trimmed_to_the_budget(llm: FakeLLM) -> None:
    llm.answer(valid_answer())
    settings = settings_for(llm, history_token_budget=300)
    advisor = Advisor(settings, ManualClock(NOW))
    request = fixture_request(job="job-history", history=history_of(100))
    try:
        outcome = await advisor.advise(request)
    finally:
        await advisor.close()

    assert outcome.plan is not None
    user = llm.requests[0].messages[1]["content"]
    runs = [json.loads(line) for line in user.splitlines() if line.startswith('{"slot"')]
    assert 0 < len(runs) < 100
    assert sum(-(-(len(json.dumps(r, separators=(",", ":"))) + 1) // 4) for r in runs) <= 300
    newest = request.history[-1].slot_time.isoformat().replace("+00:00", "Z")
    assert runs[-1]["slot"] == newest  # the oldest runs were dropped, not the newest
    assert f"({len(runs)} shown, {100 - len(runs)} older omitted)" in user


async def test_disabled_advisor_sends_nothing(llm: FakeLLM) -> None:
    advisor = Advisor(AdvisorSettings(), ManualClock(NOW))
    outcome = await advisor.advise(fixture_request(job="job-disabled"))
    await advisor.close()
    await advisor.close()  # idempotent
    assert outcome.plan is None and outcome.fallback_reason == "disabled"
    assert llm.requests == []


async def test_api_key_is_never_logged(llm: FakeLLM, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    llm.answer(BAD)
    llm.error(500, message="upstream broke")
    await advise_once(llm, "job-logging", max_repairs=1)
    assert "upstream broke" in caplog.text  # the logs do say what happened
    assert API_KEY not in caplog.text


async def test_a_bug_on_bad_input_falls_back_instead_of_raising(llm: FakeLLM) -> None:
    run = history_of(1)[0]
    naive = replace(run, slot_time=run.slot_time.replace(tzinfo=None))  # not comparable to `now`
    request = fixture_request(job="job-naive-history", history=(naive,))
    advisor = Advisor(settings_for(llm), ManualClock(NOW))
    try:
        outcome = await advisor.advise(request)
    finally:
        await advisor.close()
    assert outcome.plan is None and outcome.fallback_reason == "internal_error"
    assert llm.requests == []


async def test_concurrent_advice_is_bounded_by_the_setting(llm: FakeLLM) -> None:
    for index in range(6):
        llm.answer(valid_answer("notify", seconds=60 + index), delay_seconds=0.1)
    advisor = Advisor(settings_for(llm, max_concurrent_requests=2), ManualClock(NOW))
    try:
        outcomes = await asyncio.gather(
            *(advisor.advise(fixture_request(job=f"job-concurrent-{i}")) for i in range(6))
        )
    finally:
        await advisor.close()
    assert all(outcome.result is OutcomeResult.ACCEPTED for outcome in outcomes)
    seconds = sorted(o.plan.next_run_in.total_seconds() for o in outcomes if o.plan)
    assert seconds == [60, 61, 62, 63, 64, 65]
    assert llm.max_in_flight == 2


async def test_slow_answer_within_the_deadline_is_used(llm: FakeLLM) -> None:
    llm.answer(valid_answer(), delay_seconds=0.2)
    outcome = await advise_once(llm, "job-slow", timeout_seconds=5.0)
    assert outcome.result is OutcomeResult.ACCEPTED


async def test_deadline_covers_the_whole_call_not_each_read(llm: FakeLLM) -> None:
    # Every byte comes well within the deadline, the whole body does not.
    llm.trickle(valid_answer(), byte_pause_seconds=0.05)
    outcome = await advise_once(llm, "job-trickle", timeout_seconds=0.5)
    assert outcome.classifications == ("provider_error",)
    assert outcome.fallback_reason == "provider_error"


async def test_missing_usage_counts_as_zero_tokens(llm: FakeLLM) -> None:
    body = {"choices": [{"index": 0, "message": {"role": "assistant", "content": valid_answer()}}]}
    llm.envelope(body)
    outcome = await advise_once(llm, "job-no-usage")
    assert outcome.plan is not None
    assert (outcome.input_tokens, outcome.output_tokens) == (0, 0)


@pytest.mark.parametrize(
    "change",
    [
        {"endpoints": ()},
        {"min_next_run": timedelta(hours=2), "max_next_run": timedelta(hours=1)},
        {"min_next_run": timedelta(seconds=-1)},
    ],
    ids=["no-endpoints", "min-above-max", "negative-min"],
)
async def test_unanswerable_request_falls_back_without_asking(
    llm: FakeLLM, change: dict[str, Any]
) -> None:
    request = replace(fixture_request(job="job-unanswerable"), **change)
    advisor = Advisor(settings_for(llm), ManualClock(NOW))
    try:
        outcome = await advisor.advise(request)
    finally:
        await advisor.close()
    assert outcome.plan is None and outcome.fallback_reason == "invalid_request"
    assert llm.requests == []
