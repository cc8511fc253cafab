"""The service fixtures isolate runs and tests, and clean up after them."""

from __future__ import annotations

import os

import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from tests.helpers import services


def test_environment_is_cleared() -> None:
    leaked = [
        name
        for name in os.environ
        if name.startswith("CONVEYOR_")
        and not name.startswith("CONVEYOR_TEST_")
        and name != services.REQUIRE_SERVICES_ENV
    ]
    assert leaked == []


async def _scalar(url: str, sql: str) -> object:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            return (await connection.execute(text(sql))).scalar()
    finally:
        await engine.dispose()


async def _execute(url: str, *statements: str) -> None:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            for statement in statements:
                await connection.execute(text(statement))
    finally:
        await engine.dispose()


async def test_each_database_is_new_and_private(make_postgres_database) -> None:
    first = await make_postgres_database()
    second = await make_postgres_database()
    first_name, second_name = make_url(first).database, make_url(second).database
    assert first_name != second_name
    assert first_name.startswith(f"conveyor_t_{services.RUN_ID}_")
    assert await _scalar(first, "SELECT current_database()") == first_name

    await _execute(first, "CREATE TABLE marker (id int)", "INSERT INTO marker VALUES (1)")
    assert await _scalar(first, "SELECT count(*) FROM marker") == 1
    assert await _scalar(second, "SELECT to_regclass('public.marker') IS NULL") is True


async def test_template_clone_copies_then_diverges(make_postgres_database) -> None:
    template = await make_postgres_database()
    await _execute(template, "CREATE TABLE seeded (id int)", "INSERT INTO seeded VALUES (1)")

    by_url = await make_postgres_database(template=template)
    by_name = await make_postgres_database(template=make_url(template).database)
    for clone in (by_url, by_name):
        assert await _scalar(clone, "SELECT count(*) FROM seeded") == 1

    await _execute(by_url, "INSERT INTO seeded VALUES (2)")
    assert await _scalar(by_url, "SELECT count(*) FROM seeded") == 2
    assert await _scalar(template, "SELECT count(*) FROM seeded") == 1


async def test_databases_of_this_run_are_listed(postgres_admin_url, make_postgres_database):
    url = await make_postgres_database()
    names = await _scalar(
        postgres_admin_url,
        "SELECT string_agg(datname, ',') FROM pg_database "
        f"WHERE datname LIKE 'conveyor_t_{services.RUN_ID}_%'",
    )
    assert make_url(url).database in str(names).split(",")


# Two tests in order: the second checks that the first one's keys were deleted.
_first_prefix: list[str] = []


async def test_redis_prefix_is_private(redis_url: str, redis_prefix: str) -> None:
    assert redis_prefix.startswith(f"conveyor-test:{services.RUN_ID}:")
    async with Redis.from_url(redis_url) as client:
        await client.set(f"{redis_prefix}a", "1")
        await client.hset(f"{redis_prefix}b", "field", "1")
        assert await client.exists(f"{redis_prefix}a", f"{redis_prefix}b") == 2
    _first_prefix.append(redis_prefix)


async def test_redis_prefix_keys_deleted_after_test(redis_url: str, redis_prefix: str) -> None:
    if not _first_prefix:
        pytest.skip("needs test_redis_prefix_is_private to run first")
    previous = _first_prefix[0]
    assert redis_prefix != previous
    async with Redis.from_url(redis_url) as client:
        assert await client.exists(f"{previous}a", f"{previous}b") == 0


async def test_delete_keys_with_prefix_spares_other_keys(redis_url: str, redis_prefix: str):
    glob_like = f"{redis_prefix}[x]*"  # glob metacharacters in a prefix match only themselves
    async with Redis.from_url(redis_url) as client:
        await client.mset({f"{glob_like}{i}": i for i in range(1200)})
        await client.set(f"{redis_prefix}xz", "keep")
        assert await services.delete_keys_with_prefix(client, glob_like) == 1200
        assert await client.get(f"{redis_prefix}xz") == b"keep"
        with pytest.raises(ValueError):
            await services.delete_keys_with_prefix(client, "")
