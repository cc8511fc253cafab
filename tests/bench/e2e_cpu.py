"""CPU accounting of the end-to-end bench: one group per server process.

Like tests/bench/cpu.py (whose `CpuMeter` it extends), run as its own small
process, told "start" and "stop" on stdin:

    python -m tests.bench.e2e_cpu <client pid> <database> <interval> name=pid ...

Groups: each named process (queue, events, scheduler, executor, http),
bench_client, postgres (bench database and shared processes), redis, other.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Mapping

from tests.bench.cpu import CpuMeter


class ProcessesMeter(CpuMeter):
    """A `CpuMeter` with one group per named process instead of one "server"."""

    def __init__(self, pids: Mapping[str, int], client_pid: int, database: str) -> None:
        super().__init__(-1, client_pid, database)
        self.GROUPS = (*pids, "bench_client", "postgres", "redis")
        self._named = {pid: name for name, pid in pids.items()}

    def _group(self, pid: int, name: str) -> str:
        return self._named.get(pid) or super()._group(pid, name)


class ProcessesWindow:
    """One measured window of a `ProcessesMeter` in its own process (see cpu.CpuWindow)."""

    def __init__(self, pids: Mapping[str, int], database: str, interval: float = 0.5) -> None:
        args = [sys.executable, "-m", "tests.bench.e2e_cpu", str(os.getpid()), database]
        args += [str(interval), *(f"{name}={pid}" for name, pid in pids.items())]
        self._process = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def _say(self, line: str) -> str:
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.write(line + "\n")
        self._process.stdin.flush()
        return self._process.stdout.readline()

    def start(self) -> None:
        self._say("start")

    def stop(self) -> tuple[dict[str, float], float]:
        result = json.loads(self._say("stop"))
        self._process.wait(10)
        return result["percent"], result["seconds"]

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait()


def main(argv: list[str]) -> int:
    client_pid, database, interval, *named = argv
    pids = {name: int(pid) for name, _, pid in (item.partition("=") for item in named)}
    meter = ProcessesMeter(pids, int(client_pid), database)
    if sys.stdin.readline().strip() != "start":
        return 0
    meter.start()
    print("started", flush=True)
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
    while not stop.wait(float(interval)):
        meter.tick()
    meter.tick()
    print(json.dumps({"percent": meter.percent(), "seconds": meter.elapsed()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
