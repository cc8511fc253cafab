"""The scheduler under test runs on both backends: the `core` fixture (tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from conveyor_core.settings import CoreSettings
from tests.helpers.scheduler import SchedulerEnv


@pytest.fixture
def fast_scheduler(monkeypatch: pytest.MonkeyPatch) -> None:
    """Short polls so tests see outcomes quickly (settings are read from the environment)."""
    monkeypatch.setenv("CONVEYOR_SCHEDULER_TICK_SECONDS", "0.02")
    monkeypatch.setenv("CONVEYOR_SCHEDULER_OUTCOME_POLL_SECONDS", "0.05")
    monkeypatch.setenv("CONVEYOR_SCHEDULER_OUTCOME_RECHECK_SECONDS", "0.1")
    monkeypatch.setenv("CONVEYOR_SCHEDULER_EVENT_POLL_SECONDS", "0.05")
    monkeypatch.setenv("CONVEYOR_SCHEDULER_RELAY_POLL_SECONDS", "0.05")
    monkeypatch.setenv("CONVEYOR_SCHEDULER_LEASE_RETRY_SECONDS", "0.05")


@pytest.fixture
async def env(core: CoreSettings, fast_scheduler: None) -> AsyncIterator[SchedulerEnv]:
    scheduler_env = await SchedulerEnv(core).start()
    yield scheduler_env
    await scheduler_env.stop()
