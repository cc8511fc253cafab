"""A secured platform with the console (both backends), and an HTTP client for its API."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from conveyor_core.fake_shop import FakeShop
from conveyor_core.settings import CoreSettings
from tests.helpers.console import ConsolePlatform, start_console_platform


@pytest.fixture
def fake_shop(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeShop]:
    shop = FakeShop().start()
    monkeypatch.setenv("CONVEYOR_EXAMPLE_SHOP_URL", shop.url)
    yield shop
    shop.stop()


@pytest.fixture
async def console(
    core: CoreSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_shop: FakeShop
) -> AsyncIterator[ConsolePlatform]:
    env = await start_console_platform(core, tmp_path, monkeypatch, auth=True)
    yield env
    await env.platform.stop(grace=1)


@pytest.fixture
async def http(console: ConsolePlatform) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=console.url, timeout=30) as client:
        yield client
