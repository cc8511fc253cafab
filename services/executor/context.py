"""The executor's RunContext: what one attempt's runner sees (conveyor_executor.runners.context)."""

from __future__ import annotations

import asyncio
import enum

from conveyor_core.clock import Clock
from conveyor_executor.domain.model import Progress, RunRef
from conveyor_executor.recording import RunRecorder
from conveyor_executor.runners.context import Step
from conveyor_executor.secrets import SecretSource
from conveyor_executor.watch import WatchHub


class StopCause(enum.Enum):
    """Why an attempt was told to stop (first cause wins)."""

    ABORT = "abort"  # AbortRun, or a cancel seen on heartbeat
    SHUTDOWN = "shutdown"  # drain timeout passed: hand the order to another executor
    LEASE_LOST = "lease_lost"  # the queue refused our lease token: the order is not ours


class AttemptContext:
    """RunContext of one attempt; also carries the stop request and the latest progress."""

    def __init__(
        self,
        ref: RunRef,
        attempt: int,
        recorder: RunRecorder,
        secrets: SecretSource,
        hub: WatchHub,
        clock: Clock,
        max_output_bytes: int,
    ) -> None:
        self.ref = ref
        self._attempt = attempt
        self._recorder = recorder
        self._secrets = secrets
        self._hub = hub
        self._clock = clock
        self._max_output_bytes = max_output_bytes
        self._cancelled = asyncio.Event()
        self.stop_cause: StopCause | None = None
        self.stop_reason = ""
        self.progress: Progress | None = None
        self.progress_sent: Progress | None = None
        #: When the attempt started (the stalled-runs gauge measures from here until progress).
        self.started_at = clock.now()

    @property
    def run_id(self) -> str:
        return self.ref.run_id

    @property
    def namespace(self) -> str:
        return self.ref.namespace

    @property
    def attempt(self) -> int:
        return self._attempt

    @property
    def cancelled(self) -> asyncio.Event:
        return self._cancelled

    def stop(self, cause: StopCause, reason: str) -> None:
        """Ask the runner to stop; the first cause and reason are kept."""
        if self.stop_cause is None:
            self.stop_cause, self.stop_reason = cause, reason
        self._cancelled.set()

    async def report_progress(self, percent: float, message: str) -> None:
        self.set_progress(percent, message)

    def set_progress(self, percent: float, message: str) -> None:
        """`report_progress` for callers without a coroutine (on the loop's thread)."""
        percent = min(100.0, max(0.0, float(percent)))
        self.progress = Progress(percent, message[:512], self._clock.now())
        self._hub.publish(self.ref, progress=self.progress)

    async def record_step(self, step: Step) -> None:
        await self._recorder.step(self.ref, self._attempt, step)

    async def save_output(self, name: str, data: bytes, *, truncated: bool) -> str:
        if len(data) > self._max_output_bytes:
            data, truncated = data[: self._max_output_bytes], True
        return await self._recorder.output(self.ref, name, data, truncated, self._clock.now())

    def secret(self, name: str) -> str | None:
        return self._secrets.get(name)
