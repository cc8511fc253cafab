"""Readiness that follows the dependencies, and liveness that notices a stuck event loop.

`ReadinessMonitor` re-runs, every `CONVEYOR_READINESS_CHECK_INTERVAL_SECONDS`,
each hosted service's dependency check (the coordination backend's ping, then
the service's `self_check()`: its database reachable and migrated; the executor
also checks its queue) with a deadline of `..._CHECK_TIMEOUT_SECONDS`. With
hysteresis, so one slow query does not flap it: a service turns NOT_SERVING
after `CONVEYOR_READINESS_FAILURE_THRESHOLD` failed checks in a row and SERVING
again after `CONVEYOR_READINESS_SUCCESS_THRESHOLD` good ones. Transitions are
logged (WARNING with the cause, INFO on recovery) and `conveyor_ready{service}`
is 1 or 0.

`LoopWatchdog` is liveness: a task on the event loop beats every second; a
thread checks the beats. When none came for `CONVEYOR_LIVENESS_STALL_SECONDS`
the thread logs an ERROR with the loop thread's stack (what blocks it), and once
the loop turns again the overall health "" goes NOT_SERVING for good, so the
kubelet's liveness probe restarts the process. While the loop is stuck the
probe gets no answer at all (the health service runs on that loop), which
fails it as well. `conveyor_event_loop_lag_seconds` (read in the exporter's
thread) shows how late the last beat is.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import traceback
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

from opentelemetry.metrics import CallbackOptions, Observation

from conveyor_core.metrics import meter
from conveyor_core.tasks import cancel_and_wait

log = logging.getLogger(__name__)
_meter = meter(__name__)

#: Sets readiness of the named health services (GrpcServer.set_serving).
SetServing = Callable[[str, bool], Awaitable[None]]
Check = Callable[[], Awaitable[None]]


@dataclass
class Watched:
    """One hosted service: its health names and its dependency check."""

    service: str
    names: Sequence[str]
    check: Check
    ready: bool = True
    failures: int = 0
    successes: int = 0


_MONITORS: set[ReadinessMonitor] = set()


class ReadinessMonitor:
    def __init__(
        self,
        watched: Sequence[Watched],
        set_serving: SetServing,
        interval: float,
        timeout: float,
        failure_threshold: int,
        success_threshold: int,
    ) -> None:
        self.watched = list(watched)
        self._set_serving = set_serving
        self._interval = interval
        self._timeout = timeout
        self._failure_threshold = failure_threshold
        self._success_threshold = success_threshold
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="readiness-monitor")
            _MONITORS.add(self)

    async def stop(self) -> None:
        _MONITORS.discard(self)
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.check_once()

    async def check_once(self) -> None:
        """Check every service once and apply the thresholds."""
        for watched in self.watched:
            try:
                await asyncio.wait_for(watched.check(), self._timeout)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await self._failed(watched, exc)
            else:
                await self._succeeded(watched)

    async def _failed(self, watched: Watched, error: BaseException) -> None:
        watched.successes = 0
        watched.failures += 1
        if watched.ready and watched.failures >= self._failure_threshold:
            watched.ready = False
            cause = "timed out" if isinstance(error, TimeoutError) else f"{type(error).__name__}"
            log.warning(
                "%s: not ready after %d failed dependency checks (%s: %s)",
                watched.service,
                watched.failures,
                cause,
                str(error)[:300],
            )
            for name in watched.names:
                await self._set_serving(name, False)

    async def _succeeded(self, watched: Watched) -> None:
        watched.failures = 0
        watched.successes += 1
        if not watched.ready and watched.successes >= self._success_threshold:
            watched.ready = True
            log.info("%s: dependencies reachable again; ready", watched.service)
            for name in watched.names:
                await self._set_serving(name, True)


def _ready(options: CallbackOptions) -> Iterable[Observation]:
    return [
        Observation(1 if watched.ready else 0, {"service": watched.service})
        for monitor in list(_MONITORS)
        for watched in monitor.watched
    ]


_meter.create_observable_gauge(
    "conveyor.ready",
    callbacks=[_ready],
    unit="1",
    description="1 while a hosted service passes its dependency checks (readiness), else 0.",
)


class LoopWatchdog:
    """Liveness of the event loop (see the module docstring)."""

    BEAT_SECONDS = 1.0

    def __init__(self, stall_seconds: float, on_stalled: Callable[[], Awaitable[None]]) -> None:
        self.stall_seconds = stall_seconds
        self._on_stalled = on_stalled
        self._last_beat = time.monotonic()
        self._stalled = threading.Event()
        self._reported = False
        self._stop = threading.Event()
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._loop_thread_id = 0
        _WATCHDOGS.add(self)

    @property
    def lag(self) -> float:
        return max(0.0, time.monotonic() - self._last_beat)

    @property
    def stalled(self) -> bool:
        return self._stalled.is_set()

    def start(self) -> None:
        self._loop_thread_id = threading.get_ident()
        self._last_beat = time.monotonic()
        self._task = asyncio.create_task(self._beat(), name="loop-watchdog")
        self._thread = threading.Thread(target=self._watch, name="loop-watchdog", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        _WATCHDOGS.discard(self)
        self._stop.set()
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5)

    async def _beat(self) -> None:
        while True:
            self._last_beat = time.monotonic()
            if self._stalled.is_set() and not self._reported:
                self._reported = True
                await self._on_stalled()
            await asyncio.sleep(self.BEAT_SECONDS)

    def _watch(self) -> None:
        period = min(self.BEAT_SECONDS, self.stall_seconds / 4)
        while not self._stop.wait(period):
            lag = self.lag
            if lag >= self.stall_seconds and not self._stalled.is_set():
                self._stalled.set()
                frame = sys._current_frames().get(self._loop_thread_id)
                stack = "".join(traceback.format_stack(frame)) if frame else "(no stack)"
                log.error(
                    "event loop stuck for %.1fs (CONVEYOR_LIVENESS_STALL_SECONDS=%g): liveness "
                    "fails from now on; the loop thread is at:\n%s",
                    lag,
                    self.stall_seconds,
                    stack,
                )


_WATCHDOGS: set[LoopWatchdog] = set()


def _lag(options: CallbackOptions) -> Iterable[Observation]:
    return [Observation(max((w.lag for w in list(_WATCHDOGS)), default=0.0))] if _WATCHDOGS else []


_meter.create_observable_gauge(
    "conveyor.event_loop.lag",
    callbacks=[_lag],
    unit="s",
    description="Time since the event loop's last watchdog beat (about 1 s when healthy).",
)
