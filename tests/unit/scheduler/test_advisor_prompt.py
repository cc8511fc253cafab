"""The advisor's prompts and settings (pure)."""

from __future__ import annotations

import json
import logging

import pytest
from pydantic import ValidationError

from conveyor_scheduler.advisor import AdvisorSettings, Classification
from conveyor_scheduler.advisor.prompt import (
    build_messages,
    estimate_tokens,
    history_line,
    repair_messages,
    trim_history,
)
from tests.fixtures.advisor import NOW, fixture_request, history_of


def test_token_estimate_is_four_characters_a_token_rounded_up() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("abcd") == 1
    assert estimate_tokens("abcde") == 2


def test_history_is_trimmed_to_the_budget_dropping_the_oldest() -> None:
    history = history_of(50)
    line_cost = estimate_tokens(history_line(history[-1], NOW) + "\n")
    budget = line_cost * 10 + line_cost // 2  # room for ten runs, not eleven

    kept = trim_history(history, NOW, budget)

    assert kept == [history_line(run, NOW) for run in history[-10:]]
    assert sum(estimate_tokens(line + "\n") for line in kept) <= budget


def test_whole_history_fits_a_large_budget_and_none_fits_zero() -> None:
    history = history_of(5)
    assert len(trim_history(history, NOW, 10_000)) == 5
    assert trim_history(history, NOW, 0) == []


def test_prompt_names_job_endpoints_bounds_schema_and_newest_runs() -> None:
    request = fixture_request(history=history_of(40))
    line_cost = estimate_tokens(history_line(request.history[-1], NOW) + "\n")

    system, user = build_messages(request, history_token_budget=line_cost * 3)

    assert system["role"] == "system" and '"next_run_in_seconds"' in system["content"]
    assert '"enum":["low","medium","high"]' in system["content"]
    text = user["content"]
    assert "Job: fixture-job" in text
    assert '{"name":"transform","depends_on":["fetch"]}' in text
    assert "between 60 and 3600" in text
    assert "(3 shown, 37 older omitted)" in text
    history_lines = [line for line in text.splitlines() if line.startswith('{"slot"')]
    assert [json.loads(line)["slot"] for line in history_lines] == [
        run.slot_time.isoformat().replace("+00:00", "Z") for run in request.history[-3:]
    ]


def test_repair_quotes_the_answer_and_lists_every_issue() -> None:
    messages = repair_messages(
        "not json", Classification.SCHEMA_PARSE_ERROR, ["first problem", "second problem"], 4
    )
    assert messages[0] == {"role": "assistant", "content": "not "}
    assert messages[1]["role"] == "user"
    assert "schema_parse_error" in messages[1]["content"]
    assert "- first problem\n- second problem" in messages[1]["content"]


def test_repair_of_an_empty_answer_sends_no_empty_assistant_message() -> None:
    messages = repair_messages("", Classification.EMPTY_RESPONSE, ["the answer was empty"], 100)
    assert [m["role"] for m in messages] == ["user"]


def test_settings_are_off_by_default_and_read_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert AdvisorSettings().enabled is False
    monkeypatch.setenv("CONVEYOR_ADVISOR_ENABLED", "true")
    monkeypatch.setenv("CONVEYOR_ADVISOR_BASE_URL", "http://127.0.0.1:1/v1")
    monkeypatch.setenv("CONVEYOR_ADVISOR_MODEL", "m")
    monkeypatch.setenv("CONVEYOR_ADVISOR_MAX_REPAIRS", "5")
    settings = AdvisorSettings()
    assert (settings.enabled, settings.max_repairs) == (True, 5)


def test_enabled_settings_need_a_provider() -> None:
    with pytest.raises(ValidationError, match="CONVEYOR_ADVISOR_BASE_URL"):
        AdvisorSettings(enabled=True, model="m")


def test_settings_are_frozen_and_hide_the_api_key(caplog: pytest.LogCaptureFixture) -> None:
    settings = AdvisorSettings(api_key="sk-very-secret")
    with pytest.raises(ValidationError):
        settings.max_repairs = 3  # type: ignore[misc]
    assert "sk-very-secret" not in repr(settings)
    logging.getLogger("test").info("settings: %s", settings)
    assert "sk-very-secret" not in caplog.text


def test_limits_are_validated() -> None:
    with pytest.raises(ValidationError):
        AdvisorSettings(max_repairs=-1)
    with pytest.raises(ValidationError):
        AdvisorSettings(timeout_seconds=0)
