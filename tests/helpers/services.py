"""Where the test suite finds PostgreSQL and Redis.

Each finder tries, in order:

1. the URL in `CONVEYOR_TEST_POSTGRES_URL` / `CONVEYOR_TEST_REDIS_URL`;
2. a throwaway container (testcontainers) when a Docker engine answers;
3. the local server on 127.0.0.1 (PostgreSQL 5432 as user postgres with trust
   authentication, Redis 6379) when a TCP connect succeeds;

and returns None when none is there (the fixtures then skip, or fail under
`CONVEYOR_REQUIRE_SERVICES=1`). Probes use short timeouts and never hang.
Results are cached: one probe, and at most one container, per process.

Everything a test run creates carries `RUN_ID`, so concurrent runs against
the same servers never see each other's data: databases are named
`conveyor_t_<RUN_ID>_<n>`, Redis keys start with `conveyor-test:<RUN_ID>:<n>:`.
`RUN_ID` names this process (tests.helpers.leftovers), so a later run can tell
that a killed run's leftovers are its own to remove.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import socket
from typing import Any
from urllib.parse import urlsplit

from tests.helpers import leftovers
from tests.helpers.leftovers import redis_glob_escape

logger = logging.getLogger(__name__)

#: This pytest process: `<tag>_<pid>_<start>` (see tests.helpers.leftovers).
RUN_ID = leftovers.current_run_id()

POSTGRES_URL_ENV = "CONVEYOR_TEST_POSTGRES_URL"
REDIS_URL_ENV = "CONVEYOR_TEST_REDIS_URL"
REQUIRE_SERVICES_ENV = "CONVEYOR_REQUIRE_SERVICES"

#: PostgreSQL connections per service engine in tests (production default: 20). A test
#: hosts up to four services, the two xdist workers one test each, and PostgreSQL's
#: default max_connections is 100 for everything on the machine: at 20 a burst of
#: two four-service tests (plus a benchmark or another worktree's run) ran it out
#: ("sorry, too many clients already").
TEST_DB_POOL_SIZE = 10

LOCAL_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
LOCAL_REDIS_URL = "redis://127.0.0.1:6379/0"

# Same major versions as the CI servers.
POSTGRES_IMAGE = "postgres:15-alpine"
REDIS_IMAGE = "redis:7-alpine"

#: Seconds allowed to each reachability probe.
PROBE_TIMEOUT = 1.0

_containers: list[Any] = []


def services_required() -> bool:
    """True when a missing service must fail the tests that need it, not skip them."""
    return os.environ.get(REQUIRE_SERVICES_ENV, "").strip().lower() in {"1", "true", "yes"}


@functools.cache
def find_postgres() -> str | None:
    """An admin URL (SQLAlchemy asyncpg) of a PostgreSQL server, or None."""
    if url := os.environ.get(POSTGRES_URL_ENV):
        return url
    if docker_engine_answers():
        return _start_postgres_container()
    if tcp_reachable("127.0.0.1", 5432):
        return LOCAL_POSTGRES_URL
    return None


@functools.cache
def find_redis() -> str | None:
    """A redis:// URL of a Redis server, or None."""
    if url := os.environ.get(REDIS_URL_ENV):
        return url
    if docker_engine_answers():
        return _start_redis_container()
    if tcp_reachable("127.0.0.1", 6379):
        return LOCAL_REDIS_URL
    return None


def tcp_reachable(host: str, port: int, timeout: float = PROBE_TIMEOUT) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@functools.cache
def docker_engine_answers() -> bool:
    """True if a Docker engine answers a ping within the probe timeout."""
    # A raw connect first: the docker SDK leaks a socket (ResourceWarning, an
    # error under filterwarnings=error) when its own connect fails.
    if not _docker_endpoint_reachable():
        return False
    try:
        import docker  # imported lazily: only needed when probing

        client = docker.from_env(timeout=max(1, round(PROBE_TIMEOUT)))
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception as exc:  # any failure means "no usable engine"
        logger.debug("no Docker engine: %s", exc)
        return False


def _docker_endpoint_reachable() -> bool:
    endpoint = urlsplit(os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock")
    if endpoint.scheme == "unix":
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(PROBE_TIMEOUT)
            try:
                sock.connect(endpoint.path)
            except OSError:
                return False
            return True
    if endpoint.scheme in {"tcp", "http", "https"} and endpoint.hostname:
        return tcp_reachable(endpoint.hostname, endpoint.port or 2375)
    return True  # ssh:// and others: let the SDK try


def _start_postgres_container() -> str:
    from testcontainers.community.postgres import PostgresContainer

    container = PostgresContainer(
        POSTGRES_IMAGE,
        username="postgres",
        password="postgres",
        dbname="postgres",
        driver="asyncpg",
    )
    _track(container.start())
    return container.get_connection_url()


def _start_redis_container() -> str:
    from testcontainers.community.redis import RedisContainer

    container = RedisContainer(REDIS_IMAGE)
    _track(container.start())
    host = container.get_container_host_ip()
    return f"redis://{host}:{container.get_exposed_port(6379)}/0"


def _track(container: Any) -> None:
    if not _containers:
        atexit.register(stop_containers)
    _containers.append(container)


def stop_containers() -> None:
    """Stop the containers this process started (testcontainers' reaper is the backstop)."""
    while _containers:
        container = _containers.pop()
        try:
            container.stop()
        except Exception:
            logger.warning("could not stop test container %s", container, exc_info=True)


async def delete_keys_with_prefix(client: Any, prefix: str) -> int:
    """Delete every key starting with `prefix` (SCAN + UNLINK); return how many.

    Args:
        client: A `redis.asyncio.Redis`.
        prefix: Key prefix; must not be empty.
    """
    if not prefix:
        raise ValueError("refusing to delete every key: empty prefix")
    deleted = 0
    batch: list[Any] = []
    async for key in client.scan_iter(match=redis_glob_escape(prefix) + "*", count=500):
        batch.append(key)
        if len(batch) >= 500:
            deleted += await client.unlink(*batch)
            batch.clear()
    if batch:
        deleted += await client.unlink(*batch)
    return deleted
