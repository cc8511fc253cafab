"""The operator CLI as its users run it: the installed `conveyor` binary in a subprocess,
against a platform served in the test process (`operator_platform`), with its output
captured, or in a pseudo-terminal for the live views (`PtyProcess`)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import json
import os
import pty
import re
import struct
import sys
import termios
import threading
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from conveyor_core.runtime import Platform
from conveyor_core.settings import CoreSettings
from tests.helpers import sdk_app

#: The entry point the venv installed (pyproject's [project.scripts]).
CONVEYOR = Path(sys.executable).with_name("conveyor")
#: The namespace of tests.helpers.sdk_app, which the platform's executor leases in.
NAMESPACE = "sdk"
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\r")


@dataclasses.dataclass(frozen=True)
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        assert self.code == 0, f"exit {self.code}: {self.stderr}"
        return json.loads(self.stdout)

    def json_lines(self) -> list[Any]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]


def cli_environment(address: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.pop("COLUMNS", None)
    return {
        **env,
        "CONVEYOR_ADDRESS": address,
        "CONVEYOR_NAMESPACE": NAMESPACE,
        "NO_COLOR": "1",
        **extra,
    }


async def conveyor(
    address: str, *args: str, stdin: bytes | None = None, env: Mapping[str, str] | None = None
) -> Result:
    """Run `conveyor ARGS...` to its end (within 90 s) and return what it said."""
    assert CONVEYOR.exists(), f"{CONVEYOR} is missing: run `make venv`"
    process = await asyncio.create_subprocess_exec(
        str(CONVEYOR),
        *args,
        env=dict(env) if env is not None else cli_environment(address),
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(stdin), 90)
    assert process.returncode is not None
    result = Result(process.returncode, out.decode(), err.decode())
    assert "Traceback" not in result.stdout + result.stderr, result
    return result


async def start_conveyor(address: str, *args: str) -> asyncio.subprocess.Process:
    """`conveyor ARGS...` left running (tail -f), its stdout a pipe."""
    return await asyncio.create_subprocess_exec(
        str(CONVEYOR),
        *args,
        env=cli_environment(address),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


class PtyProcess:
    """`conveyor ARGS...` with a pseudo-terminal (120x40) as stdin, stdout and stderr."""

    def __init__(self, process: asyncio.subprocess.Process, master: int) -> None:
        self.process = process
        self._master = master
        self._chunks: list[bytes] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @classmethod
    async def start(cls, address: str, *args: str) -> PtyProcess:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        env = cli_environment(address, TERM="xterm-256color")
        env.pop("NO_COLOR")
        try:
            process = await asyncio.create_subprocess_exec(
                str(CONVEYOR), *args, env=env, stdin=slave, stdout=slave, stderr=slave
            )
        finally:
            os.close(slave)
        return cls(process, master)

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self._master, 65536)
            except OSError:  # EIO: the terminal's other side closed
                return
            if not chunk:
                return
            self._chunks.append(chunk)

    @property
    def raw(self) -> str:
        return b"".join(self._chunks).decode("utf-8", "replace")

    @property
    def text(self) -> str:
        """What a person saw, without the escape sequences that drew it."""
        return _ANSI.sub("", self.raw)

    async def wait(self, limit: float = 90) -> int:
        code = await asyncio.wait_for(self.process.wait(), limit)
        await asyncio.to_thread(self._reader.join, 10)
        return code

    def close(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
        with contextlib.suppress(OSError):
            os.close(self._master)


@contextlib.asynccontextmanager
async def operator_platform(
    core: CoreSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[str]:
    """Every service in this process (the embedded default's shape) on a free port; the
    executor hosts tests.helpers.sdk_app and leases its queues and "jobs" in "sdk"."""
    settings = {
        "CONVEYOR_EXECUTOR_NAMESPACE": NAMESPACE,
        "CONVEYOR_EXECUTOR_QUEUES": '["jobs"]',
        "CONVEYOR_EXECUTOR_WORKSPACE_ROOT": str(tmp_path / "workspaces"),
        "CONVEYOR_EXECUTOR_LEASE_WAIT_SECONDS": "0.2",
        "CONVEYOR_EXECUTOR_HEARTBEAT_INTERVAL_SECONDS": "0.1",
        "CONVEYOR_EXECUTOR_ABORT_GRACE_SECONDS": "2",
        "CONVEYOR_EXECUTOR_RETRY_INITIAL_INTERVAL_SECONDS": "0.05",
        "CONVEYOR_SCHEDULER_TICK_SECONDS": "0.1",
        "CONVEYOR_SCHEDULER_OUTCOME_POLL_SECONDS": "0.2",
        "CONVEYOR_QUEUE_RELAY_POLL_SECONDS": "0.1",
        "CONVEYOR_SCHEDULER_RELAY_POLL_SECONDS": "0.1",
        "CONVEYOR_EXECUTOR_RELAY_POLL_SECONDS": "0.1",
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    hosting = {"apps": [sdk_app.app], "only_app_queues": False}
    platform = Platform(core, hosting=hosting)
    port = await platform.start("127.0.0.1:0")
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await platform.stop(grace=1)
