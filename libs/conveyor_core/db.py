"""SQLAlchemy 2.0 async engines for PostgreSQL and the embedded SQLite default.

PostgreSQL gets a connection pool and a statement timeout. SQLite gets WAL
mode and a single pooled connection: SQLite allows one writer at a time, and
its own busy handler waits by sleeping (up to 100 ms a try), whereas waiting
for the pool's one connection is a prompt asyncio hand-off.
"""

from __future__ import annotations

from pathlib import Path

import asyncpg
from sqlalchemy import event, exc
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from conveyor_core.settings import CoreSettings

# Constraint and index names every service's MetaData uses, so migrations name them alike.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "pk": "pk_%(table_name)s",
}


def create_engine(url: str, settings: CoreSettings) -> AsyncEngine:
    """An async engine for `url` tuned for its dialect."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(url, parsed.database)
    timeout_ms = int(settings.db_statement_timeout_seconds * 1000)
    return create_async_engine(
        url,
        # A fixed pool: overflow connections are closed on return, and each new
        # one pays connection set-up, statement preparation and type introspection.
        pool_size=settings.db_pool_size,
        max_overflow=0,
        # No pre-ping: it costs a round trip on every checkout. A connection the
        # server dropped fails one call and is discarded; recycling bounds its age.
        pool_recycle=1800,
        connect_args={"server_settings": {"statement_timeout": str(timeout_ms)}},
    )


#: How long (ms) a SQLite statement waits for another connection's write lock.
SQLITE_BUSY_TIMEOUT_MS = 5000


def _sqlite_engine(url: str, database: str | None) -> AsyncEngine:
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url, pool_size=1, max_overflow=0)

    @event.listens_for(engine.sync_engine, "connect")
    def _pragmas(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return engine


# Errors that mean the database could not be reached or the connection broke, as
# opposed to an error in the statement or the data.
_CONNECTION_ERRORS = (
    OSError,  # refused, reset, unreachable
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.CannotConnectNowError,  # starting up or shutting down
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.InterfaceError,  # "connection is closed"
)


def is_unavailable(error: BaseException) -> bool:
    """Whether `error` says the database is out of reach (retry later), not that a
    statement was wrong: a lost or refused connection, an exhausted pool."""
    if isinstance(error, exc.DBAPIError) and error.connection_invalidated:
        return True
    if isinstance(error, exc.TimeoutError):  # no pooled connection came free in time
        return True
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, _CONNECTION_ERRORS):
            return True
        current = getattr(current, "orig", None) or current.__cause__
    return False


def data_error(error: BaseException) -> str | None:
    """The database's complaint when `error` is a value it cannot store (SQLSTATE class 22,
    a data exception: a string longer than its column, NUL in text, text that is not JSON,
    a number out of range), else None. The request was wrong, not the code."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, asyncpg.exceptions.DataError):
            return str(current)
        current = getattr(current, "orig", None) or current.__cause__
    return None


def redacted(url: str) -> str:
    """The URL with its password hidden, for logs."""
    return make_url(url).render_as_string(hide_password=True)
