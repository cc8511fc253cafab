"""Prompts of the advisor: the first request and the repair follow-ups. Pure, no I/O.

Token counts are estimated, not measured: about four characters per token
(`estimate_tokens`), the usual rule of thumb for English and JSON with
OpenAI-style tokenizers. The estimate only decides how much run history fits
`AdvisorSettings.history_token_budget`; the provider's reported usage is what
gets recorded. History is trimmed from the oldest run, so the model always sees
the most recent runs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from conveyor_scheduler.advisor.answer import ANSWER_SCHEMA
from conveyor_scheduler.advisor.types import AdvisorRequest, Classification, RunSummary

CHARS_PER_TOKEN = 4

SYSTEM_PROMPT = """\
You advise a job scheduler. A job calls HTTP endpoints; from the job's recent \
runs you decide which of its endpoints to call at the next run and how many \
seconds from now that run should start. Use only the job's endpoints, keep the \
job's dependencies (an endpoint runs after the endpoints it depends on), and \
choose next_run_in_seconds within the bounds given. Answer with one JSON object \
and nothing else, matching this JSON schema:
"""

Message = dict[str, str]


def estimate_tokens(text: str) -> int:
    """Estimated tokens of `text`: ceil(characters / 4)."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def history_line(run: RunSummary, now: datetime) -> str:
    """One run as a compact JSON line (what the model reads)."""
    record: dict[str, Any] = {
        "slot": _iso(run.slot_time),
        "age_seconds": round((now - run.slot_time).total_seconds()),
        "outcome": run.outcome,
        "work_found": run.work_found,
        "duration_seconds": run.duration_seconds,
        "error_type": run.error_type,
        "endpoints_called": list(run.endpoints_called),
    }
    return json.dumps(record, separators=(",", ":"))


def trim_history(history: Sequence[RunSummary], now: datetime, budget: int) -> list[str]:
    """Lines of the newest runs whose estimated tokens fit `budget`, oldest first.

    Runs are taken from the newest backwards; the first that does not fit stops
    the walk, so the kept runs are always a contiguous most-recent stretch.
    """
    kept: list[str] = []
    used = 0
    for run in reversed(history):
        line = history_line(run, now)
        cost = estimate_tokens(line + "\n")
        if used + cost > budget:
            break
        kept.append(line)
        used += cost
    kept.reverse()
    return kept


def build_messages(request: AdvisorRequest, history_token_budget: int) -> list[Message]:
    """The system and user messages of the first request for `request`."""
    lines = trim_history(request.history, request.now, history_token_budget)
    omitted = len(request.history) - len(lines)
    endpoints = [{"name": e.name, "depends_on": list(e.depends_on)} for e in request.endpoints]
    parts = [
        f"Job: {request.job}",
        f"Now: {_iso(request.now)}",
        "Endpoints of the job (name and the endpoints it depends on):",
        json.dumps(endpoints, separators=(",", ":")),
        "next_run_in_seconds must be between "
        f"{request.min_next_run.total_seconds():g} and {request.max_next_run.total_seconds():g}.",
        f"Recent runs, oldest first ({len(lines)} shown, {omitted} older omitted):",
        *lines,
    ]
    schema = json.dumps(ANSWER_SCHEMA, separators=(",", ":"))
    return [
        {"role": "system", "content": SYSTEM_PROMPT + schema},
        {"role": "user", "content": "\n".join(parts)},
    ]


def repair_messages(
    answer: str | None, classification: Classification, issues: Sequence[str], echo_chars: int
) -> list[Message]:
    """The rejected answer (cut to `echo_chars`; left out when blank) and a request to fix it."""
    echoed = (answer or "")[:echo_chars]
    problems = "\n".join(f"- {issue}" for issue in issues)
    correction = (
        f"Your answer was rejected ({classification.value}):\n{problems}\n"
        "Answer again with one corrected JSON object matching the schema, and nothing else."
    )
    messages = [{"role": "assistant", "content": echoed}] if echoed.strip() else []
    return [*messages, {"role": "user", "content": correction}]


def _iso(instant: datetime) -> str:
    return instant.astimezone(UTC).isoformat().replace("+00:00", "Z")
