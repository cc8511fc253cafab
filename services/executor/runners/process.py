"""Running one process in its own process group, with bounded output capture.

The process starts a new session (so a new process group); on timeout or abort
the whole group gets SIGTERM, then SIGKILL after the grace period, and once
the main process has exited any background child it left in the group is
killed too, so nothing of a run outlives it (short of a child that starts its
own session on purpose).

Output is read in chunks while the process runs and never held beyond the
limit: the first half of the limit and the last half are kept, the middle is
counted and replaced by a marker "[... truncated N bytes ...]", since the
beginning says what ran and the end usually says how it failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from conveyor_executor.runners.abort import Aborted, unless_cancelled
from conveyor_executor.runners.scrub import truncation_marker

logger = logging.getLogger(__name__)

_CHUNK = 64 * 1024
#: Seconds to wait for output pipes to drain after the process group is gone.
_DRAIN_TIMEOUT = 5.0
_EXIT_POLL_SECONDS = 0.02


class BoundedCapture:
    """Keeps the head and tail of a stream, at most `limit` bytes in all."""

    def __init__(self, limit: int) -> None:
        self._head_limit = (limit + 1) // 2
        self._tail_limit = limit - self._head_limit
        self._head = bytearray()
        self._tail = bytearray()
        self.total = 0

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self._head_limit - len(self._head)
        if room > 0:
            self._head.extend(chunk[:room])
            chunk = chunk[room:]
        if chunk and self._tail_limit:
            self._tail.extend(chunk)
            del self._tail[: max(0, len(self._tail) - self._tail_limit)]

    @property
    def truncated(self) -> bool:
        return self.total > len(self._head) + len(self._tail)

    def value(self) -> bytes:
        if not self.truncated:
            return bytes(self._head + self._tail)
        dropped = self.total - len(self._head) - len(self._tail)
        return bytes(self._head) + truncation_marker(dropped).encode() + bytes(self._tail)


@dataclass(frozen=True)
class ProcessResult:
    exit_code: int | None  # None when it could not start
    stdout: BoundedCapture
    stderr: BoundedCapture
    timed_out: bool
    aborted: bool
    duration_ms: int
    start_error: str = ""


async def run_process(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    timeout_seconds: float,
    cancelled: asyncio.Event,
    max_output_bytes: int,
    kill_grace: float,
) -> ProcessResult:
    """Run `argv` to completion, timeout or abort; never raises for the process's failure."""
    stdout, stderr = BoundedCapture(max_output_bytes), BoundedCapture(max_output_bytes)
    began = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=cwd,
            env=dict(env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:  # not found, not executable, bad cwd
        return ProcessResult(None, stdout, stderr, False, False, 0, f"{type(exc).__name__}: {exc}")
    assert proc.stdout is not None and proc.stderr is not None
    readers = [
        asyncio.create_task(_drain(proc.stdout, stdout)),
        asyncio.create_task(_drain(proc.stderr, stderr)),
    ]
    try:
        timed_out, aborted = await _wait_or_terminate(proc, timeout_seconds, cancelled, kill_grace)
    finally:
        _kill_group(proc.pid, signal.SIGKILL)  # leftovers, or the caller itself was cancelled
        await _finish_readers(readers)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_DRAIN_TIMEOUT):
                await proc.wait()  # reap the transport
    duration = round((time.monotonic() - began) * 1000)
    return ProcessResult(proc.returncode, stdout, stderr, timed_out, aborted, duration)


async def _wait_or_terminate(
    proc: asyncio.subprocess.Process, seconds: float, cancelled: asyncio.Event, grace: float
) -> tuple[bool, bool]:
    """Wait for the leader's exit; on timeout or abort terminate the group. (timed_out, aborted)."""
    try:
        await unless_cancelled(_leader_exited(proc, within=seconds), cancelled)
    except TimeoutError:
        await _terminate_group(proc, grace)
        return True, False
    except Aborted:
        await _terminate_group(proc, grace)
        return False, True
    return False, False


async def _drain(stream: asyncio.StreamReader, capture: BoundedCapture) -> None:
    while chunk := await stream.read(_CHUNK):
        capture.feed(chunk)


async def _finish_readers(readers: list[asyncio.Task[None]]) -> None:
    _, still_reading = await asyncio.wait(readers, timeout=_DRAIN_TIMEOUT)
    for task in still_reading:  # a child that escaped the group still holds the pipe
        task.cancel()
    for task in readers:
        with contextlib.suppress(asyncio.CancelledError, OSError):
            await task


async def _terminate_group(proc: asyncio.subprocess.Process, grace: float) -> None:
    """SIGTERM to the group, SIGKILL after `grace` seconds if the leader is still there."""
    _kill_group(proc.pid, signal.SIGTERM)
    try:
        await _leader_exited(proc, within=grace)
        return
    except TimeoutError:
        logger.info("process group %d ignored SIGTERM for %.1fs; killing it", proc.pid, grace)
    _kill_group(proc.pid, signal.SIGKILL)
    await _leader_exited(proc)


async def _leader_exited(proc: asyncio.subprocess.Process, within: float | None = None) -> int:
    """The exit code of the group's leader, as soon as it exits.

    Polled because asyncio's `Process.wait()` also waits for the output pipes
    to close, which a background child left in the group can hold open: the
    leader's exit is what ends an iteration (the leftovers are then killed).

    Raises:
        TimeoutError: still running after `within` seconds.
    """
    async with asyncio.timeout(within):
        while proc.returncode is None:  # noqa: ASYNC110 (see above: no event to wait on)
            await asyncio.sleep(_EXIT_POLL_SECONDS)
    return proc.returncode


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def process_group_alive(pgid: int) -> bool:
    """Whether a live process (not a zombie) of group `pgid` exists (tests, diagnostics).

    Reads /proc where there is one, since a killed child reparented to a PID 1
    that is slow to reap stays visible to killpg() as a zombie.
    """
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesised command: state, ppid, pgrp, ...
        state, _ppid, pgrp = stat.rsplit(")", 1)[1].split()[:3]
        if int(pgrp) == pgid and state not in ("Z", "X"):
            return True
    return False
