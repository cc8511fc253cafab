"""Gauges read from the database at scrape time, through a cached snapshot.

OpenTelemetry calls an observable gauge's callback when a reader collects
(Prometheus: on each scrape, from the exporter's HTTP thread). A service's
figures that live in its database (queue depth, pending events, blocked runs)
are one cheap grouped query; `SnapshotGauges` runs it on the service's event
loop and keeps the answer for `refresh_seconds`, so however often Prometheus
(or several Prometheus servers) scrape, the database sees at most one query
per interval per replica::

    snapshot = SnapshotGauges("queue", query, refresh_seconds=15, timeout_seconds=2)
    snapshot.start()            # on the service's loop; remembers the loop
    ...
    for labels, value in snapshot.rows("depth"): ...   # in a gauge callback, any thread

A collection from another thread whose snapshot is older than the interval
waits up to `timeout_seconds` for a fresh one; when the query fails or takes
longer it reports the last good snapshot (and logs one warning per failure
streak). A collection on the loop's own thread (an in-memory reader in tests)
cannot wait for the loop: it reports the snapshot it has and schedules a
refresh. `refresh()` is awaitable for tests and start-up.

Every replica reports the same database-wide figures: aggregate with `max by`
(not `sum by`) across instances in queries and rules.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from opentelemetry.metrics import CallbackOptions, Observation

log = logging.getLogger(__name__)

#: A snapshot: per figure name, its (labels, value) rows.
Snapshot = Mapping[str, list[tuple[dict[str, str], float]]]
SnapshotQuery = Callable[[], Awaitable[Snapshot]]


class SnapshotGauges:
    """A cached database snapshot behind observable gauges (see the module docstring)."""

    def __init__(
        self, name: str, query: SnapshotQuery, refresh_seconds: float, timeout_seconds: float
    ) -> None:
        self.name = name
        self._query = query
        self.refresh_seconds = refresh_seconds
        self.timeout_seconds = timeout_seconds
        self._snapshot: Snapshot = {}
        self._taken = float("-inf")  # time.monotonic() of the last good snapshot
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._inflight: concurrent.futures.Future[None] | asyncio.Task[None] | None = None
        self._failing = False

    def start(self) -> None:
        """Bind to the running loop: collections from other threads query through it."""
        self._loop = asyncio.get_running_loop()
        _LIVE.add(self)

    async def stop(self) -> None:
        """Stop reporting (the service stops; its database goes away), and end a refresh in
        flight: left running, it would hold a pooled connection past the engine's dispose
        and leave it to the garbage collector, unclosed."""
        _LIVE.discard(self)
        self._loop = None
        with self._lock:
            inflight, self._inflight = self._inflight, None
        if inflight is None or inflight.done():
            return
        inflight.cancel()
        waited = inflight if isinstance(inflight, asyncio.Task) else asyncio.wrap_future(inflight)
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await waited

    async def refresh(self) -> None:
        """Run the query now and keep its answer."""
        try:
            snapshot = await self._query()
        except Exception as exc:
            if not self._failing:
                log.warning(
                    "%s gauges: snapshot query failed (%s: %s); reporting the last snapshot",
                    self.name,
                    type(exc).__name__,
                    exc,
                )
            self._failing = True
            raise
        if self._failing:
            log.info("%s gauges: snapshot query works again", self.name)
        self._failing = False
        self._snapshot, self._taken = snapshot, time.monotonic()

    def rows(self, figure: str) -> list[tuple[dict[str, str], float]]:
        """The rows of `figure`, refreshing the snapshot first when it is stale."""
        if time.monotonic() - self._taken >= self.refresh_seconds:
            self._refresh_from_collector()
        return list(self._snapshot.get(figure, ()))

    def _refresh_from_collector(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        on_loop = _running_loop() is loop
        with self._lock:
            if self._inflight is None or self._inflight.done():
                if on_loop:
                    self._inflight = loop.create_task(self._quiet_refresh())
                else:
                    self._inflight = asyncio.run_coroutine_threadsafe(self._quiet_refresh(), loop)
            inflight = self._inflight
        if on_loop or not isinstance(inflight, concurrent.futures.Future):
            return  # the loop cannot be waited for from its own thread
        try:
            inflight.result(timeout=self.timeout_seconds)
        except concurrent.futures.TimeoutError:
            log.debug("%s gauges: snapshot slower than %.1fs", self.name, self.timeout_seconds)

    async def _quiet_refresh(self) -> None:
        try:
            await asyncio.wait_for(self.refresh(), self.timeout_seconds * 4)
        except TimeoutError:
            log.warning(
                "%s gauges: snapshot query took over %.1fs; reporting the last snapshot",
                self.name,
                self.timeout_seconds * 4,
            )
        except Exception:
            return  # logged by refresh (once per failure streak); the last snapshot stays


_LIVE: weakref.WeakSet[SnapshotGauges] = weakref.WeakSet()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def observe(
    source: str, figure: str, empty: float | None = None
) -> Callable[[CallbackOptions], Iterable[Observation]]:
    """A gauge callback reporting `figure` from every live snapshot named `source`.

    Module-level instruments are created once per process; the services that
    start (several in tests, one in production) register their snapshots.
    `empty`: reported without labels when a snapshot is live but has no rows (a
    gauge whose absence would read as "not exported", such as blocked runs).
    """

    def callback(options: CallbackOptions) -> Iterable[Observation]:
        observations: list[Observation] = []
        live = False
        for snapshot in list(_LIVE):
            if snapshot.name == source:
                live = True
                observations.extend(
                    Observation(value, labels) for labels, value in snapshot.rows(figure)
                )
        if live and not observations and empty is not None:
            observations.append(Observation(empty))
        return observations

    return callback


def labels_of(**values: Any) -> dict[str, str]:
    """Gauge labels as strings."""
    return {key: str(value) for key, value in values.items()}
