"""State shared by the parts of SqlWorkOrderStore: engines, dialect, queue-settings cache."""

from __future__ import annotations

import time
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from conveyor_queue.domain.model import QueueConfig, QueueRef
from conveyor_queue.store.raw import RawStatements
from conveyor_queue.store.rows import queue_from_row
from conveyor_queue.store.tables import queues


class SqlStoreBase:
    """Engines, dialect and the short-lived copy of queue settings (see sql.py)."""

    def __init__(
        self,
        engine: AsyncEngine,
        config_cache_seconds: float = 1.0,
        hot_connections: int = 0,
        hot_connection_seconds: float = 1800.0,
    ) -> None:
        self._engine = engine
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._postgres = engine.dialect.name == "postgresql"
        self._insert = postgresql.insert if self._postgres else sqlite.insert
        # PostgreSQL hot paths, in autocommit, on connections kept between statements.
        self._raw = RawStatements(engine, hot_connections, hot_connection_seconds)
        self._known_queues: set[tuple[str, str]] = set()
        # Queue settings decide which lease path runs; a short-lived copy saves a
        # query per lease. Flow-controlled leasing re-reads them under the row lock.
        self._config_ttl = config_cache_seconds
        self._configs: dict[tuple[str, str], tuple[float, QueueConfig]] = {}

    @property
    def postgres(self) -> bool:
        return self._postgres

    async def close(self) -> None:
        """Give back the connections kept between hot-path statements; before disposing."""
        await self._raw.close()

    # -- queue settings cache ------------------------------------------------

    async def _queue_configs(
        self, conn: AsyncConnection, namespace: str, names: Sequence[str]
    ) -> dict[str, QueueConfig]:
        """Settings of the named queues (a queue never configured is absent)."""
        now = time.monotonic()
        known = {name: self._configs.get((namespace, name)) for name in names}
        stale = [name for name, entry in known.items() if entry is None or entry[0] <= now]
        if stale:
            result = await conn.execute(
                select(queues).where(queues.c.namespace == namespace, queues.c.queue.in_(stale))
            )
            fetched = {row.queue: queue_from_row(row._mapping) for row in result}
            for name in stale:
                config = fetched.get(name, QueueConfig(namespace, name))
                self._configs[(namespace, name)] = (now + self._config_ttl, config)
        return {name: self._configs[(namespace, name)][1] for name in names}

    async def queue_get_cached(self, ref: QueueRef) -> QueueConfig:
        """Settings as this replica last saw them (at most config_cache_seconds old)."""
        return (await self._cached_configs(ref.namespace, [ref.queue]))[ref.queue]

    async def _cached_configs(self, namespace: str, names: Sequence[str]) -> dict[str, QueueConfig]:
        now = time.monotonic()
        entries = [self._configs.get((namespace, name)) for name in names]
        if all(e is not None and e[0] > now for e in entries):
            return {name: e[1] for name, e in zip(names, entries, strict=True)}  # type: ignore[index]
        async with self._autocommit.connect() as conn:
            return await self._queue_configs(conn, namespace, names)
