"""CPU accounting of the measured windows, from /proc (Linux).

`CpuWindow` runs a `CpuMeter` in its own small process (this module, which
imports nothing heavy): sampling /proc from the bench process would take the
GIL from the event loop being measured, and starting a process at the start
of a window would steal a core from the server just then. The process is
started ahead, idles until told "start", samples every half second and
answers "stop" with the result:

    python -m tests.bench.cpu <client pid> <database> <interval> name=pid ...

Each `name=pid` is a group of its own: the queue and event-store suites name
one ("server"), the end-to-end suite one per server process (queue, events,
scheduler, executor, http).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")

Sample = tuple[float, dict[int, tuple[str, float]], float]


def _proc_cpu(pid: int) -> tuple[str, float] | None:
    """(command name, CPU seconds it used so far), or None once it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2 :].split()
    # utime and stime are fields 14 and 15 of stat (1-based), 12 and 13 after "(comm) ".
    return name, (int(fields[11]) + int(fields[12])) / _TICKS


def _cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace")


def machine_busy() -> float:
    """CPU seconds the whole machine spent busy (all cores), from /proc/stat."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _TICKS


class CpuMeter:
    """CPU time of the named processes, this process, PostgreSQL, Redis and everything else.

    "postgres" is the backends of the bench database plus PostgreSQL's shared
    processes (WAL writer, checkpointer...); backends of other databases count
    as "other", with every other process on the machine. A large "other" means
    something else ran during the window and the figures are disturbed.

    Sampled every `interval` seconds between `start()` and `stop()`, so a
    backend that exits (a pool connection closed) loses at most one interval.
    """

    def __init__(self, named: Mapping[str, int], client_pid: int, database: str) -> None:
        self.groups = (*named, "bench_client", "postgres", "redis")
        self._named = {pid: name for name, pid in named.items()}
        self._client_pid = client_pid
        self._database = database
        self._groups: dict[int, str] = {}  # a pid keeps its group for life
        self._last: Sample | None = None
        self._first_time = 0.0
        self._used: dict[str, float] = {}
        self._busy = 0.0

    def _group(self, pid: int, name: str) -> str:
        if pid in self._named:
            return self._named[pid]
        if pid == self._client_pid:
            return "bench_client"
        if pid not in self._groups:
            if name in ("postgres", "postmaster"):
                line = _cmdline(pid)
                # Client backends read "postgres: 15/main: <user> <database> <host>(<port>)
                # <state>" (or "[local]"); the WAL writer, checkpointer... name no client.
                backend = "(" in line or "[local]" in line
                ours = f" {self._database} " in line
                self._groups[pid] = "postgres" if ours or not backend else "other"
            elif name.startswith("redis-server"):
                self._groups[pid] = "redis"
            else:
                self._groups[pid] = "other"
        return self._groups[pid]

    def sample(self) -> Sample:
        usage: dict[int, tuple[str, float]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                pid = int(entry)
                found = _proc_cpu(pid)
                if found is not None:
                    group = self._group(pid, found[0])
                    if group != "other":
                        usage[pid] = (group, found[1])
        return time.perf_counter(), usage, machine_busy()

    def start(self) -> None:
        self._last = self.sample()
        self._first_time = self._last[0]
        self._used = dict.fromkeys(self.groups, 0.0)
        self._busy = 0.0

    def tick(self) -> None:
        """Add the CPU used since the previous sample (a new process: since its start)."""
        assert self._last is not None
        now = self.sample()
        for pid, (group, seconds) in now[1].items():
            self._used[group] += seconds - self._last[1].get(pid, (group, 0.0))[1]
        self._busy += now[2] - self._last[2]
        self._last = now

    def elapsed(self) -> float:
        """Seconds from start() to the last sample."""
        return 0.0 if self._last is None else self._last[0] - self._first_time

    def percent(self) -> dict[str, float]:
        """Percent of one core each group used since start() (200 = both cores of 2)."""
        elapsed = max(self.elapsed(), 1e-9)
        used = dict(self._used)
        used["other"] = max(0.0, self._busy - sum(used.values()))
        return {k: round(100 * v / elapsed, 1) for k, v in used.items()}


class CpuWindow:
    """One measured window of a `CpuMeter` running in its own process.

    Create it (which starts the idle process) well before the window;
    `start()` and `stop()` then only exchange a line with it.
    """

    def __init__(self, named: Mapping[str, int], database: str, interval: float = 0.5) -> None:
        args = [sys.executable, "-m", "tests.bench.cpu", str(os.getpid()), database, str(interval)]
        args += [f"{name}={pid}" for name, pid in named.items()]
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
        """(percent of one core by group, seconds) since start()."""
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
    meter = CpuMeter(pids, int(client_pid), database)
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
