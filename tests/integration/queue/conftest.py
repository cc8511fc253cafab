"""The queue under test runs on both backends: the `core` fixture (tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from conveyor_core.settings import CoreSettings
from tests.helpers.queue import QueueEnv, wall_clock


@pytest.fixture
async def env(core: CoreSettings) -> AsyncIterator[QueueEnv]:
    queue_env = await QueueEnv(core, wall_clock()).start()
    yield queue_env
    await queue_env.stop()
