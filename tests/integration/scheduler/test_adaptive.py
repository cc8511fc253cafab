"""Adaptive backoff and the AI advisor move the next fire; each decision is recorded."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from conveyor.scheduler.v1 import messages_pb2 as pb
from conveyor.scheduler.v1 import service_pb2 as rpc
from conveyor_core.settings import CoreSettings
from tests.helpers.fake_llm import FakeLLM
from tests.helpers.journal import eventually
from tests.helpers.scheduler import SchedulerEnv, http_job, interval

OUT = pb.FireOutcome


async def _decisions(env: SchedulerEnv, schedule: str) -> list[pb.PolicyDecision]:
    response = await env.stub.ListPolicyDecisions(rpc.ListPolicyDecisionsRequest(parent=schedule))
    return list(reversed(response.decisions))  # oldest first


async def _next_fire(env: SchedulerEnv, schedule: str) -> datetime:
    got = await env.stub.GetSchedule(rpc.GetScheduleRequest(name=schedule))
    return got.schedule.next_fire_time.ToDatetime(tzinfo=UTC)


async def _run_next(env: SchedulerEnv, schedule: str, work_found: bool, decisions: int) -> None:
    """Wait for the fire, run it with this result, wait for the decision it leads to."""

    async def leased() -> list:  # type: ignore[type-arg]
        found = await env.lease()
        if found:
            holder.extend(found)
        return found

    holder: list = []  # type: ignore[type-arg]
    await eventually(leased)
    await env.complete(holder[0], work_found=work_found)

    async def decided() -> bool:
        return len(await _decisions(env, schedule)) >= decisions

    await eventually(decided)


async def test_backoff_stretches_after_idle_runs_and_snaps_back_after_work(
    env: SchedulerEnv,
) -> None:
    policy = pb.AdaptivePolicy(mode=pb.ADAPTIVE_MODE_BACKOFF, multiplier=2)
    await env.create_job(job=http_job(adaptive_policy=policy))
    schedule = await env.create_schedule(interval(60))
    t0 = env.clock.now()

    await _run_next(env, schedule.name, work_found=False, decisions=1)
    assert await _next_fire(env, schedule.name) == t0 + timedelta(seconds=120)
    env.clock.set(t0 + timedelta(seconds=120))
    await _run_next(env, schedule.name, work_found=False, decisions=2)
    assert await _next_fire(env, schedule.name) == t0 + timedelta(seconds=120 + 240)
    env.clock.set(t0 + timedelta(seconds=360))
    await _run_next(env, schedule.name, work_found=True, decisions=3)
    assert await _next_fire(env, schedule.name) == t0 + timedelta(seconds=420)

    decisions = await _decisions(env, schedule.name)
    assert [d.policy for d in decisions] == ["backoff"] * 3
    assert [d.backoff_level for d in decisions] == [1, 2, 0]
    assert "no work" in decisions[0].reason and "found work" in decisions[2].reason
    fires = await env.fires(schedule.name)
    assert len(fires) == 3 and all(f.outcome == OUT.FIRE_OUTCOME_SUCCEEDED for f in fires)


@pytest.fixture
def llm() -> Iterator[FakeLLM]:
    with FakeLLM() as fake:
        yield fake


@pytest.fixture
async def advised_env(
    core: CoreSettings, fast_scheduler: None, llm: FakeLLM, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[SchedulerEnv]:
    monkeypatch.setenv("CONVEYOR_ADVISOR_ENABLED", "true")
    monkeypatch.setenv("CONVEYOR_ADVISOR_BASE_URL", llm.base_url)
    monkeypatch.setenv("CONVEYOR_ADVISOR_MODEL", "fake-model")
    monkeypatch.setenv("CONVEYOR_ADVISOR_MAX_REPAIRS", "0")
    started = await SchedulerEnv(core).start()
    yield started
    await started.stop()


async def test_advisor_plan_sets_the_next_run_and_endpoints(
    advised_env: SchedulerEnv, llm: FakeLLM
) -> None:
    env = advised_env
    policy = pb.AdaptivePolicy(advisor_enabled=True)
    await env.create_job(job=http_job(3, adaptive_policy=policy))
    schedule = await env.create_schedule(interval(60))
    plan = {
        "endpoints": [{"name": "e2", "depends_on": []}],
        "next_run_in_seconds": 300,
        "confidence": "high",
        "reason": "only e2 has new data",
    }
    llm.answer(json.dumps(plan), prompt_tokens=120, completion_tokens=30)
    await _run_next(env, schedule.name, work_found=True, decisions=1)
    [decision] = await _decisions(env, schedule.name)
    assert decision.policy == "advisor" and list(decision.endpoints) == ["e2"]
    assert (decision.input_tokens, decision.output_tokens) == (120, 30)
    assert not decision.fallback_reason
    due = await _next_fire(env, schedule.name)
    env.clock.set(due)

    async def fired_with_e2() -> bool:
        fires = await env.fires(schedule.name)
        return any(list(f.endpoints) == ["e2"] for f in fires)

    await eventually(fired_with_e2)


async def test_malformed_advice_falls_back_and_is_recorded_with_its_classification(
    advised_env: SchedulerEnv, llm: FakeLLM
) -> None:
    env = advised_env
    policy = pb.AdaptivePolicy(mode=pb.ADAPTIVE_MODE_BACKOFF, advisor_enabled=True)
    await env.create_job(job=http_job(2, adaptive_policy=policy))
    schedule = await env.create_schedule(interval(60))
    t0 = env.clock.now()
    llm.answer("this is not json", prompt_tokens=50, completion_tokens=5)
    await _run_next(env, schedule.name, work_found=False, decisions=1)
    [decision] = await _decisions(env, schedule.name)
    assert decision.policy == "advisor"
    assert "schema_parse_error" in decision.classifications
    assert decision.fallback_reason
    assert decision.input_tokens == 50
    assert decision.backoff_level == 1  # the fallback policy (backoff) decided
    assert await _next_fire(env, schedule.name) == t0 + timedelta(seconds=120)
