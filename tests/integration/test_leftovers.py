"""The sweep of killed runs' leftovers, on the real servers: dead runs' go, live runs' stay.

Each test judges runs under a tag of its own (`tag=`), with real processes of
this PID namespace: a concurrent test session's own sweep (which uses its real
tag) never touches what these tests create, so they cannot race with it.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from tests.helpers import leftovers, services
from tests.helpers.journal import eventually
from tests.helpers.leftovers import RunOwner


def _child() -> subprocess.Popen[bytes]:
    """A process that runs until its stdin closes."""
    return subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
    )


def _end(child: subprocess.Popen[bytes]) -> None:
    assert child.stdin is not None
    child.stdin.close()
    child.wait(timeout=30)


@pytest.fixture
def tag() -> str:
    """A tag no real process has, standing for this PID namespace in one test."""
    return secrets.token_hex(4)


@pytest.fixture
def runs(tag: str) -> Iterator[dict[str, RunOwner]]:
    """Owners under `tag`: a live run, a dead run, a reused pid, and another namespace's run."""
    live, dead = _child(), _child()
    try:
        owners = {
            "live": RunOwner.of_process(live.pid, tag),
            "dead": RunOwner.of_process(dead.pid, tag),
        }
        _end(dead)  # reaped: its pid names no process now
        live_owner = owners["live"]
        owners["reused"] = RunOwner(tag, live_owner.pid, live_owner.start + 1)
        owners["elsewhere"] = RunOwner(secrets.token_hex(4), dead.pid, owners["dead"].start)
        yield owners
    finally:
        if live.poll() is None:
            _end(live)
        if dead.poll() is None:
            _end(dead)


def test_run_ids_name_this_process() -> None:
    owner = RunOwner.parse(services.RUN_ID)
    assert owner == RunOwner.of_process(os.getpid())
    assert owner.tag == leftovers.namespace_tag()
    assert not leftovers.run_is_gone(owner)
    assert RunOwner.parse("0a1b2c3d") is None  # the older random format


def test_gone_only_when_certain(runs: dict[str, RunOwner], tag: str) -> None:
    assert not leftovers.run_is_gone(runs["live"], tag)
    assert leftovers.run_is_gone(runs["dead"], tag)
    assert leftovers.run_is_gone(runs["reused"], tag)
    assert not leftovers.run_is_gone(runs["elsewhere"], tag)  # its pids are not ours to check
    assert not leftovers.run_is_gone(runs["dead"])  # nor under this process's real tag


def test_names_parse_to_their_run(runs: dict[str, RunOwner]) -> None:
    run_id = runs["live"].run_id
    for name in (
        f"conveyor_t_{run_id}_12",
        f"conveyor_bench_{run_id}",
        f"conveyor_bench_{run_id}_e2e",
    ):
        assert leftovers.database_owner(name) == runs["live"]
    for name in ("conveyor_t_0a1b2c3d_4", "postgres", f"other_{run_id}", f"conveyor_t_{run_id}x"):
        assert leftovers.database_owner(name) is None
    assert leftovers.redis_key_owner(f"conveyor-test:{run_id}:3:queue:x") == runs["live"]
    assert leftovers.redis_key_owner(f"conveyor-bench:{run_id}:e2e:y") == runs["live"]
    assert leftovers.redis_key_owner("conveyor-test:0a1b2c3d:3:x") is None


async def _execute(url: str, *statements: str) -> None:
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            for statement in statements:
                await connection.execute(text(statement))
    finally:
        await engine.dispose()


async def _existing(admin_url: str, names: list[str]) -> set[str]:
    engine = create_async_engine(admin_url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(
                text("SELECT datname FROM pg_database WHERE datname = ANY(:names)"),
                {"names": names},
            )
            return set(rows.scalars())
    finally:
        await engine.dispose()


async def _connections(admin_url: str, name: str) -> int:
    engine = create_async_engine(admin_url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            count = await connection.scalar(
                text("SELECT count(*) FROM pg_stat_activity WHERE datname = :name"),
                {"name": name},
            )
            return int(count or 0)
    finally:
        await engine.dispose()


@pytest.fixture
async def databases(
    postgres_admin_url: str, runs: dict[str, RunOwner]
) -> AsyncIterator[dict[str, str]]:
    """A database per case, each dropped afterwards if the sweep kept it."""
    names = {
        "live": f"conveyor_t_{runs['live'].run_id}_1",
        "live_bench": f"conveyor_bench_{runs['live'].run_id}",
        "dead": f"conveyor_t_{runs['dead'].run_id}_1",
        "dead_bench": f"conveyor_bench_{runs['dead'].run_id}",
        "dead_bench_e2e": f"conveyor_bench_{runs['dead'].run_id}_e2e",
        "dead_in_use": f"conveyor_t_{runs['dead'].run_id}_2",
        "reused": f"conveyor_t_{runs['reused'].run_id}_1",
        "elsewhere": f"conveyor_t_{runs['elsewhere'].run_id}_1",
    }
    await _execute(postgres_admin_url, *(f'CREATE DATABASE "{name}"' for name in names.values()))
    try:
        yield names
    finally:
        await _execute(
            postgres_admin_url,
            *(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)' for name in names.values()),
        )


async def test_sweep_drops_only_databases_of_dead_runs(
    postgres_admin_url: str, databases: dict[str, str], tag: str
) -> None:
    in_use_url = make_url(postgres_admin_url).set(database=databases["dead_in_use"])
    holder = create_async_engine(in_use_url, poolclass=NullPool)
    try:
        async with holder.connect() as connection:  # a dead run's server still connected
            await connection.execute(text("SELECT 1"))
            dropped = await leftovers.sweep_databases(postgres_admin_url, tag=tag)
    finally:
        await holder.dispose()

    gone = {"dead", "dead_bench", "dead_bench_e2e", "reused"}
    assert sorted(dropped) == sorted(databases[case] for case in gone)
    remaining = await _existing(postgres_admin_url, list(databases.values()))
    assert remaining == {name for case, name in databases.items() if case not in gone}

    # Disconnected (the backend exits a moment after the client), the dead
    # run's database goes with the next sweep.
    async def disconnected() -> bool:
        return await _connections(postgres_admin_url, databases["dead_in_use"]) == 0

    await eventually(disconnected)
    assert await leftovers.sweep_databases(postgres_admin_url, tag=tag) == [
        databases["dead_in_use"]
    ]


async def test_sweep_deletes_only_keys_of_dead_runs(
    redis_url: str, runs: dict[str, RunOwner], tag: str
) -> None:
    live, dead = runs["live"].run_id, runs["dead"].run_id
    elsewhere, reused = runs["elsewhere"].run_id, runs["reused"].run_id
    kept = {f"conveyor-test:{live}:1:a": 1, f"conveyor-bench:{live}:b": 1}
    kept |= {f"conveyor-test:{elsewhere}:1:a": 1, f"conveyor-test:{tag}:1:legacy": 1}
    # More than one SCAN/UNLINK batch of a dead run's keys.
    swept = {f"conveyor-test:{dead}:{i % 3}:k{i}": i for i in range(leftovers.REDIS_BATCH * 2 + 7)}
    swept |= {f"conveyor-bench:{dead}:e2e:x": 1, f"conveyor-test:{reused}:1:a": 1}
    async with Redis.from_url(redis_url) as client:
        try:
            await client.mset(kept | swept)
            assert await leftovers.sweep_redis_keys(client, tag=tag) == len(swept)
            assert await client.exists(*kept) == len(kept)
            assert await client.exists(*swept) == 0
        finally:
            await client.delete(*kept, *swept)
