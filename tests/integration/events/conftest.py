"""The event store under test runs on both backends: the `core` fixture (tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from conveyor_core.settings import CoreSettings
from tests.helpers.events import EventsEnv


@pytest.fixture
async def env(core: CoreSettings) -> AsyncIterator[EventsEnv]:
    events_env = await EventsEnv(core).start()
    yield events_env
    await events_env.stop()


@pytest.fixture
async def topic(env: EventsEnv) -> str:
    """The topic "orders", created."""
    await env.create_topic("orders")
    return "orders"
