"""Migration tests run on an empty SQLite file and an empty PostgreSQL database."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'service.db'}"
    return request.getfixturevalue("empty_postgres_url")


@pytest.fixture
async def empty_postgres_url(make_postgres_database) -> str:  # type: ignore[no-untyped-def]
    return await make_postgres_database()
