"""Executor tests run on both backends (the `core` fixture) against a real queue service."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from conveyor_core.settings import CoreSettings
from tests.helpers.executor import ExecutorEnv, ScriptedRunner
from tests.helpers.queue import QueueEnv, wall_clock


@pytest.fixture
async def queue(core: CoreSettings) -> AsyncIterator[QueueEnv]:
    env = await QueueEnv(core, wall_clock()).start()
    yield env
    await env.stop()


@pytest.fixture
def scripted() -> ScriptedRunner:
    return ScriptedRunner()


@pytest.fixture
async def executor(
    core: CoreSettings, queue: QueueEnv, scripted: ScriptedRunner
) -> AsyncIterator[ExecutorEnv]:
    env = await ExecutorEnv(core, queue, runners={"command": scripted}).start()
    yield env
    await env.stop()
