"""Suite-wide fixtures: PostgreSQL databases and Redis key prefixes isolated per run.

Services are found by `tests.helpers.services`; a test that needs a missing
service is skipped, or fails when `CONVEYOR_REQUIRE_SERVICES=1` (CI).

* `postgres_admin_url` (session): admin URL of the server.
* `make_postgres_database` (session): `await make_postgres_database(template=None)`
  creates `conveyor_t_<RUN_ID>_<n>` (optionally a TEMPLATE clone) and returns its
  URL; every database it created is dropped at the end of the session.
* `redis_url` (session) and `redis_prefix` (function): a key prefix
  `conveyor-test:<RUN_ID>:<n>:` whose keys are deleted after the test.

A run that is killed never reaches that cleanup, so the first use of each
server in a session also removes the databases and keys of runs that are
certainly gone (tests.helpers.leftovers), never those of a live run.

Tests using these fixtures get the `postgres` / `redis` markers, so
`-m "not postgres and not redis"` selects the tests that need no server.

Hypothesis runs under the `conveyor` profile: a modest number of examples per
property (CONVEYOR_HYPOTHESIS_EXAMPLES, default 40) and no deadline (a loaded
2-core machine makes call times vary), so the property tests stay fast.
"""

from __future__ import annotations

import asyncio
import importlib
import itertools
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit, urlunsplit

import pytest
from hypothesis import HealthCheck, settings
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from conveyor_core import db, migrations
from conveyor_core.metrics import configure_metrics
from conveyor_core.migrations import MigrationSet
from conveyor_core.runtime import SERVICES
from conveyor_core.settings import CoreSettings
from conveyor_core.telemetry import configure_tracing
from tests.helpers import leftovers, services
from tests.helpers.tcp_proxy import BlackholeProxy

settings.register_profile(
    "conveyor",
    max_examples=int(os.environ.get("CONVEYOR_HYPOTHESIS_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("conveyor")

logger = logging.getLogger(__name__)

# The environment never leaks into tests: only the test suite's own knobs stay.
for _name in list(os.environ):
    if (
        _name.startswith("CONVEYOR_")
        and not _name.startswith("CONVEYOR_TEST_")
        and _name != services.REQUIRE_SERVICES_ENV
    ):
        del os.environ[_name]

_POSTGRES_FIXTURES = {"postgres_admin_url", "make_postgres_database"}
_REDIS_FIXTURES = {"redis_url", "redis_prefix"}


def pytest_report_header() -> str:
    return f"conveyor test run id: {services.RUN_ID}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & _POSTGRES_FIXTURES:
            item.add_marker(pytest.mark.postgres)
        if fixtures & _REDIS_FIXTURES:
            item.add_marker(pytest.mark.redis)


def _unavailable(service: str, reason: str) -> NoReturn:
    if services.services_required():
        pytest.fail(
            f"{service} is required ({services.REQUIRE_SERVICES_ENV}=1) but {reason}",
            pytrace=False,
        )
    pytest.skip(f"{service} unavailable: {reason}")


def _quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# -- PostgreSQL -------------------------------------------------------------


@pytest.fixture(scope="session")
async def postgres_admin_url() -> str:
    """Admin URL of a reachable PostgreSQL server (skip or fail when there is none)."""

    url = services.find_postgres()
    if url is None:
        _unavailable(
            "PostgreSQL",
            f"{services.POSTGRES_URL_ENV} is unset, no Docker engine answers "
            "and nothing listens on 127.0.0.1:5432",
        )
    engine = create_async_engine(url, poolclass=NullPool, connect_args={"timeout": 5})
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except Exception as exc:
        reason = f"connecting to {_redacted(url)} failed: {type(exc).__name__}: {exc}"
        if os.environ.get(services.POSTGRES_URL_ENV):
            pytest.fail(f"{services.POSTGRES_URL_ENV}: {reason}", pytrace=False)
        _unavailable("PostgreSQL", reason)
    finally:
        await engine.dispose()
    try:
        await leftovers.sweep_databases(url)
    except Exception:  # a server we may not sweep still serves the tests
        logger.warning("could not sweep stale test databases", exc_info=True)
    return url


def _redacted(url: str) -> str:
    """`url` without its password, fit for a skip or failure message."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


class PostgresDatabases:
    """Factory of databases private to this run: `await make(template=None) -> url`.

    `template` is a database name or a URL returned by an earlier call; nobody
    may be connected to it while it is cloned (dispose engines first). `drop(url)`
    removes one early; the rest are dropped after the last test.
    """

    def __init__(self, admin_url: str) -> None:
        self._admin_url = admin_url
        self._admin = create_async_engine(
            admin_url,
            isolation_level="AUTOCOMMIT",  # CREATE/DROP DATABASE refuse transactions
            poolclass=NullPool,
            connect_args={"timeout": 10},
        )
        self._numbers = itertools.count(1)
        self.created: list[str] = []

    async def __call__(self, template: str | None = None) -> str:
        name = f"conveyor_t_{services.RUN_ID}_{next(self._numbers)}"
        statement = f"CREATE DATABASE {_quote_identifier(name)}"
        if template:
            if "://" in template:
                template = make_url(template).database or ""
            statement += f" TEMPLATE {_quote_identifier(template)}"
        async with self._admin.connect() as connection:
            await connection.execute(text(statement))
        self.created.append(name)
        url = make_url(self._admin_url).set(database=name)
        return url.render_as_string(hide_password=False)

    async def drop(self, url_or_name: str) -> None:
        name = make_url(url_or_name).database if "://" in url_or_name else url_or_name
        assert name in self.created, f"{name} was not made by this factory"
        async with self._admin.connect() as connection:  # NullPool: one per drop
            await connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            )
            await connection.execute(
                text(f"DROP DATABASE IF EXISTS {_quote_identifier(name)} WITH (FORCE)")
            )
        self.created.remove(name)

    async def close(self) -> None:
        """Leave what is still here to `pytest_sessionfinish` (see `_drop_at_session_end`)."""
        _LEFT_TO_DROP.append((self._admin_url, list(self.created)))
        await self._admin.dispose()


#: (admin URL, database names) that `pytest_sessionfinish` drops.
_LEFT_TO_DROP: list[tuple[str, list[str]]] = []
_DROP_CONNECTIONS = 8


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Drop the run's databases after the last test, outside any test's timeout.

    Each DROP DATABASE forces a checkpoint (PostgreSQL 15), so a whole run's
    hundreds of drops took minutes when they ran one after another in the last
    test's teardown (past its 120 s timeout on a loaded machine), and as long
    again spread over the tests. In parallel, concurrent drops share
    checkpoints.
    """
    for admin_url, names in _LEFT_TO_DROP:
        failures = asyncio.run(_drop_at_session_end(admin_url, names))
        for failure in failures:
            logger.warning("could not drop test database %s", failure)
    _LEFT_TO_DROP.clear()


async def _drop_at_session_end(admin_url: str, names: list[str]) -> list[str]:
    admin = create_async_engine(
        admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool, connect_args={"timeout": 10}
    )
    slots = asyncio.Semaphore(_DROP_CONNECTIONS)
    failures: list[str] = []

    async def drop(name: str) -> None:
        async with slots:
            try:
                async with admin.connect() as connection:
                    await connection.execute(
                        text(f"DROP DATABASE IF EXISTS {_quote_identifier(name)} WITH (FORCE)")
                    )
            except Exception as exc:
                failures.append(f"{name}: {exc}")

    try:
        await asyncio.gather(*(drop(name) for name in names))
    finally:
        await admin.dispose()
    return failures


MakePostgresDatabase = PostgresDatabases


@pytest.fixture(scope="session")
async def make_postgres_database(postgres_admin_url: str) -> AsyncIterator[PostgresDatabases]:
    """The run's `PostgresDatabases`; what they made is dropped when the session ends."""
    databases = PostgresDatabases(postgres_admin_url)
    yield databases
    await databases.close()


# -- Redis ------------------------------------------------------------------


@pytest.fixture(scope="session")
async def redis_url() -> str:
    """URL of a reachable Redis server (skip or fail when there is none)."""

    url = services.find_redis()
    if url is None:
        _unavailable(
            "Redis",
            f"{services.REDIS_URL_ENV} is unset, no Docker engine answers "
            "and nothing listens on 127.0.0.1:6379",
        )
    client = Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
    try:
        await client.ping()
    except Exception as exc:
        reason = f"PING to {_redacted(url)} failed: {type(exc).__name__}: {exc}"
        if os.environ.get(services.REDIS_URL_ENV):
            pytest.fail(f"{services.REDIS_URL_ENV}: {reason}", pytrace=False)
        _unavailable("Redis", reason)
    else:
        try:
            await leftovers.sweep_redis_keys(client)
        except Exception:  # a server we may not sweep still serves the tests
            logger.warning("could not sweep stale test keys", exc_info=True)
    finally:
        await client.aclose()
    return url


_redis_prefix_numbers = itertools.count(1)


@pytest.fixture
async def redis_prefix(redis_url: str) -> AsyncIterator[str]:
    """A key prefix private to this test; its keys are deleted afterwards."""

    prefix = f"conveyor-test:{services.RUN_ID}:{next(_redis_prefix_numbers)}:"
    yield prefix
    async with Redis.from_url(redis_url, socket_connect_timeout=2, socket_timeout=5) as client:
        await services.delete_keys_with_prefix(client, prefix)


# -- services under test: one CoreSettings per backend ------------------------------


@pytest.fixture(scope="session")
async def platform_template_db(make_postgres_database: MakePostgresDatabase) -> str:
    """A database with every hosted service's schema, migrated once per session.

    Tests clone it (CREATE DATABASE ... TEMPLATE), which is far cheaper than
    migrating a database per test. Each service owns distinct tables and its
    own version table, so one template serves them all.
    """
    url = await make_postgres_database()
    engine = db.create_engine(url, CoreSettings())
    try:
        for migration_set in all_migration_sets():
            await migrations.upgrade(engine, migration_set)
    finally:
        await engine.dispose()
    return make_url(url).database or ""


def all_migration_sets() -> list[MigrationSet]:
    """The MigrationSet of every service in conveyor_core.runtime.SERVICES."""
    modules = (importlib.import_module(path.partition(":")[0]) for path in SERVICES.values())
    # Test-only hosts that tests patch into SERVICES reuse a real service's schema.
    return [module.MIGRATIONS for module in modules if hasattr(module, "MIGRATIONS")]


@pytest.fixture
async def postgres_core(
    make_postgres_database: MakePostgresDatabase,
    platform_template_db: str,
    redis_url: str,
    redis_prefix: str,
    tmp_path: Path,
) -> CoreSettings:
    """PostgreSQL (a fresh clone of the template) + Redis (a private key prefix)."""
    url = await make_postgres_database(template=platform_template_db)
    return CoreSettings(
        database_url=url,
        redis_url=redis_url,
        redis_key_prefix=redis_prefix,
        data_dir=tmp_path,
        db_pool_size=services.TEST_DB_POOL_SIZE,
    )


@pytest.fixture(
    params=[
        "sqlite",
        # Marked so that `-m "not postgres"` (or "not redis") deselects this variant.
        pytest.param("postgres", marks=[pytest.mark.postgres, pytest.mark.redis]),
    ]
)
def core(request: pytest.FixtureRequest, tmp_path: Path) -> CoreSettings:
    """Every test using it runs twice: on the embedded default (SQLite files +
    in-process coordination) and on PostgreSQL + Redis, as in production."""
    if request.param == "sqlite":
        return CoreSettings(data_dir=tmp_path)
    settings: CoreSettings = request.getfixturevalue("postgres_core")
    return settings


@pytest.fixture(scope="session")
def metric_reader() -> InMemoryMetricReader:
    """The process's metrics, readable with tests.helpers.metrics.metric_value.

    One meter provider per process: the first test asking installs it. Counters
    are cumulative over the session, so assert on differences or on attributes
    unique to the test (a schedule id, an endpoint URL).
    """
    reader = InMemoryMetricReader()
    configure_metrics("conveyor-test", CoreSettings(), extra_reader=reader)
    return reader


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    """The spans this module's tests finished (an exporter added to the process's tracing).

    One per test module; clear it (`spans.clear()`) where a test needs only its own.
    """
    exporter = InMemorySpanExporter()
    configure_tracing("conveyor-test", CoreSettings(), extra_exporter=exporter)
    return exporter


@pytest.fixture
async def postgres_proxy(postgres_core: CoreSettings) -> AsyncIterator[BlackholeProxy]:
    """A TCP proxy in front of the test database (tests.helpers.tcp_proxy): point a service
    at it with `through_proxy(postgres_core.database_url, proxy)` and cut or stop it."""
    url = make_url(postgres_core.database_url)
    proxy = BlackholeProxy(url.host or "127.0.0.1", url.port or 5432)
    await proxy.start()
    yield proxy
    await proxy.stop()
