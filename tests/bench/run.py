"""`make bench`: queue, event-store and end-to-end throughput and latency on PostgreSQL.

    python -m tests.bench.run                     # everything, about 1-2 minutes
    python -m tests.bench.run --only drain        # one or more scenarios (comma-separated)
    python -m tests.bench.run --profile drain     # also py-spy the server in those windows

Creates the database `conveyor_bench_<run id>` on CONVEYOR_BENCH_POSTGRES_URL (an
admin SQLAlchemy URL; default postgresql+asyncpg://postgres@127.0.0.1:5432/postgres)
and uses Redis (CONVEYOR_BENCH_REDIS_URL, default redis://127.0.0.1:6379/0) under
the key prefix `conveyor-bench:<run id>:`, starts `python -m conveyor_core.cli
serve queue` on a free port, runs the queue scenarios from this process, stops
it, then does the same with `serve events` for the event-store scenarios
(tests/bench/events.py), then starts events, queue, scheduler and executor as
four processes plus a no-op HTTP service for the end-to-end scenarios
(tests/bench/e2e.py). It prints a table and writes `.bench/results.json`.
The database, the Redis keys and the servers are removed at the end, on
failure too; first, those of earlier runs and test sessions that were killed
are (tests.helpers.leftovers).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from conveyor.queue.v1 import service_pb2_grpc
from conveyor_core.grpc import create_channel
from tests.bench import e2e, events, report
from tests.bench.cpu import CpuWindow, machine_busy
from tests.bench.environment import (
    QUEUE_SERVICE,
    ScratchDatabase,
    ServerProcess,
    admin_url,
    delete_redis_prefix,
    redis_url,
)
from tests.bench.scenarios import Bench
from tests.helpers import leftovers

OUT_DIR = Path(".bench")
# Scenarios run against the queue server (the scheduler's fires go to that queue).
SCENARIOS = ("submit_single", "submit_batch", "drain", "latency", "scheduler")
ALL_SCENARIOS = SCENARIOS + events.SCENARIOS + e2e.SCENARIOS
TARGET_RATE = 200.0


class Windows:
    """Hooks around each measured window: CPU accounting and, optionally, py-spy."""

    def __init__(
        self, server: ServerProcess, database: str, profile: set[str], profile_format: str
    ) -> None:
        self._server = server
        self._database = database
        self._profile = profile
        self._format = profile_format
        # Started ahead of each window: a process starting inside one would skew it.
        self._window = CpuWindow({"server": server.pid}, database)
        self._spy: subprocess.Popen[bytes] | None = None
        self.cpu: dict[str, dict[str, float]] = {}
        self.elapsed: dict[str, float] = {}
        self.profiles: dict[str, str] = {}

    async def start(self, name: str) -> None:
        if self._wants_profile(name):
            self._start_spy(name)
            await asyncio.sleep(0.3)  # attached before the window starts
        await asyncio.to_thread(self._window.start)

    async def stop(self, name: str) -> None:
        self.cpu[name], self.elapsed[name] = await asyncio.to_thread(self._window.stop)
        self._window = CpuWindow({"server": self._server.pid}, self._database)
        if self._spy is not None:
            self._spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            await asyncio.to_thread(self._spy.wait, 30)
            self._spy = None

    def close(self) -> None:
        self._window.close()

    def _wants_profile(self, name: str) -> bool:
        return "all" in self._profile or any(name.startswith(p) for p in self._profile)

    def _start_spy(self, name: str) -> None:
        spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which(
            "py-spy"
        )
        if spy is None:
            print("  (py-spy not found: .venv/bin/pip install py-spy; not profiling)", flush=True)
            self._profile = set()
            return
        suffix = {"flamegraph": "svg", "speedscope": "json", "raw": "txt"}[self._format]
        out = OUT_DIR / f"profile-{name}.{suffix}"
        self.profiles[name] = str(out)
        self._spy = subprocess.Popen(
            [
                spy,
                "record",
                "--pid",
                str(self._server.pid),
                "--rate",
                "250",
                "--nonblocking",
                "--format",
                self._format,
                "--output",
                str(out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )


async def _scenarios(
    args: argparse.Namespace, server: ServerProcess, windows: Windows, results: dict[str, Any]
) -> None:
    quick = args.quick
    only = _selected(args)
    async with create_channel(server.address) as channel:
        bench = Bench(
            service_pb2_grpc.WorkOrderQueueServiceStub(channel), windows.start, windows.stop
        )
        out = results["scenarios"]

        def record(name: str, result: dict[str, Any]) -> None:
            cpu = windows.cpu.get(name, {})
            result["cpu_percent"] = cpu
            if cpu and result.get("achieved_submit_rate"):  # paced: CPU per second / rate
                result["server_cpu_ms_per_order"] = round(
                    cpu["server"] * 10 / result["achieved_submit_rate"], 3
                )
            elif cpu and result.get("orders"):
                # Server CPU time spent per order over the window: its whole life cycle
                # (submit, or lease + complete, or all three for the latency run).
                result["server_cpu_ms_per_order"] = round(
                    cpu["server"] * 10 * windows.elapsed[name] / result["orders"], 3
                )
            out[name] = result
            print(f"  {name}: done", flush=True)

        if "submit_single" in only:
            record(
                "submit_single",
                await bench.submit_single(concurrency=32, seconds=2.0 if quick else 5.0),
            )
        if "submit_batch" in only:
            for batch in (100, 500):
                name = f"submit_batch_{batch}"
                record(
                    name,
                    await bench.submit_batched(
                        batch, concurrency=4, total=5_000 if quick else 20_000
                    ),
                )
        if "drain" in only:
            record(
                "drain",
                await bench.drain(
                    total=5_000 if quick else args.drain_orders,
                    max_batch=args.drain_batch,
                    loops=args.drain_loops,
                ),
            )
        if "latency" in only:
            for rate in args.latency_rates:
                # The target rate runs 15 s; other rates (below saturation) are for comparison.
                seconds = 15.0 if rate == TARGET_RATE else 8.0
                name = "latency" if rate == TARGET_RATE else f"latency_{rate:g}"
                record(
                    name,
                    await bench.latency(
                        rate=rate,
                        seconds=5.0 if quick else seconds,
                        wait=5.0,
                        max_batch=50,
                        name=name,
                    ),
                )
        if "scheduler" in only:  # tests/bench/scheduler.py: fire lag of 10,000 schedules/min
            from tests.bench.scheduler import fire_lag

            env = server._env  # the queue server's database and Redis prefix
            count = 2_000 if quick else args.scheduler_schedules
            await windows.start("scheduler")  # the whole run, setup included
            result = await fire_lag(
                server.address,
                env["CONVEYOR_DATABASE_URL"],
                env["CONVEYOR_REDIS_URL"],
                env["CONVEYOR_REDIS_KEY_PREFIX"],
                count=count,
            )
            await windows.stop("scheduler")
            record("scheduler", result)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--only", default="", help=f"comma-separated subset of {ALL_SCENARIOS}")
    parser.add_argument("--quick", action="store_true", help="smaller counts, for a smoke run")
    parser.add_argument("--drain-orders", type=int, default=20_000)
    parser.add_argument("--drain-batch", type=int, default=250, help="max_work_orders a lease")
    parser.add_argument(
        "--drain-loops",
        type=int,
        default=4,
        help="concurrent lease/complete loops in the one worker process",
    )
    parser.add_argument(
        "--latency-rates",
        default="200,50",
        type=lambda v: [float(x) for x in v.split(",") if x],
        help="submit rates (orders/s) of the latency scenario; 200 is the target",
    )
    parser.add_argument(
        "--profile",
        default="",
        help="py-spy the server in these windows (comma-separated name "
        "prefixes, or 'all'); output in .bench/",
    )
    parser.add_argument(
        "--profile-format", default="flamegraph", choices=["flamegraph", "speedscope", "raw"]
    )
    parser.add_argument("--scheduler-schedules", type=int, default=10_000)
    parser.add_argument("--output", default=str(OUT_DIR / "results.json"))
    events.add_arguments(parser)
    e2e.add_arguments(parser)
    args = parser.parse_args(argv)
    unknown = set(filter(None, args.only.split(","))) - set(ALL_SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}; known: {', '.join(ALL_SCENARIOS)}")
    return args


def _selected(args: argparse.Namespace) -> set[str]:
    return set(filter(None, args.only.split(","))) or set(ALL_SCENARIOS)


def _serve(
    service: str,
    health_service: str,
    database: ScratchDatabase,
    prefix: str,
    args: argparse.Namespace,
    results: dict[str, Any],
    scenarios: Callable[[ServerProcess, Windows], Coroutine[Any, Any, None]],
) -> None:
    """Start `service`'s server, run `await scenarios(server, windows)`, stop the server."""
    log = OUT_DIR / ("server.log" if service == "queue" else f"server-{service}.log")
    server = ServerProcess(database.url, redis_url(), prefix, log, service, health_service)
    info = results.setdefault("servers", {}).setdefault(service, {})
    windows: Windows | None = None
    try:
        server.start()
        ready = asyncio.run(server.wait_ready())
        info.update(
            {
                "command": " ".join(server.command[1:]),
                "pid": server.pid,
                "ready_seconds": round(ready, 2),
                "passthrough_env": server.passthrough,
            }
        )
        print(
            f"{service} server pid {server.pid} on {server.address} (ready in {ready:.1f} s), "
            f"database {database.name}",
            flush=True,
        )
        windows = Windows(
            server, database.name, set(filter(None, args.profile.split(","))), args.profile_format
        )
        asyncio.run(scenarios(server, windows))
        if windows.profiles:
            results.setdefault("profiles", {}).update(windows.profiles)
        if server.process is not None and server.process.poll() is not None:
            raise RuntimeError(f"{service} server died during the run:\n{server.log_tail()}")
    finally:
        if windows is not None:
            windows.close()
        info["exit_code"] = server.stop()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _machine_busy_percent(seconds: float = 1.0) -> float:
    """Percent of one core the whole machine is busy with before the run (others' work)."""
    start = machine_busy()
    time.sleep(seconds)
    return 100 * (machine_busy() - start) / seconds


async def _sweep_leftovers() -> None:
    """Remove the databases and keys of killed runs (only runs certainly gone)."""
    dropped = await leftovers.sweep_databases(admin_url())
    async with Redis.from_url(redis_url()) as client:
        deleted = await leftovers.sweep_redis_keys(client)
    if dropped or deleted:
        print(f"removed leftovers of killed runs: {len(dropped)} databases, {deleted} keys")


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    OUT_DIR.mkdir(exist_ok=True)
    signal.signal(signal.SIGTERM, _interrupt)  # killed: still drop the database, stop the server
    database = ScratchDatabase(admin_url())
    prefix = f"conveyor-bench:{leftovers.current_run_id()}:"
    selected = _selected(args)
    command = " ".join(
        [
            Path(sys.executable).name,
            "-m",
            "tests.bench.run",
            *(sys.argv[1:] if argv is None else argv),
        ]
    )
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command if (argv or sys.argv[1:]) else f"make bench ({command})",
        "git_commit": report.git_commit(),
        "machine": report.machine_info(),
        "targets": report.TARGETS,
        "scenarios": {},
    }
    busy = _machine_busy_percent()
    results["machine"]["busy_percent_before_start"] = round(busy, 1)
    if busy > report.DISTURBED_PERCENT:
        print(
            f"WARNING: the machine is already busy ({busy:.0f}% of a core) before the run: "
            "the figures will be disturbed",
            flush=True,
        )
    failed = False
    started = time.perf_counter()
    try:
        asyncio.run(_sweep_leftovers())
        asyncio.run(database.create())
        results["postgres"] = asyncio.run(database.server_info())
        if selected & set(SCENARIOS):
            _serve(
                "queue",
                QUEUE_SERVICE,
                database,
                prefix,
                args,
                results,
                lambda server, windows: _scenarios(args, server, windows, results),
            )
        if selected & set(events.SCENARIOS):
            _serve(
                "events",
                events.HEALTH_SERVICE,
                database,
                prefix,
                args,
                results,
                lambda server, windows: events.run_scenarios(
                    args, server.address, selected, windows, results
                ),
            )
        if selected & set(e2e.SCENARIOS):  # four server processes + the no-op HTTP service
            e2e.run(args, database, prefix, selected, results)
    except BaseException as exc:
        failed = True
        results["error"] = f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, KeyboardInterrupt):
            raise
    finally:
        try:
            asyncio.run(database.drop())
            asyncio.run(delete_redis_prefix(redis_url(), prefix))
        finally:
            results["total_seconds"] = round(time.perf_counter() - started, 1)
            if results["scenarios"]:
                Path(args.output).parent.mkdir(parents=True, exist_ok=True)
                Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    print()
    print(report.table(results))
    print(f"\nresults: {args.output}  (total {results['total_seconds']} s)")
    if "profiles" in results:
        print("profiles: " + ", ".join(results["profiles"].values()))
    drain = results["scenarios"].get("drain")
    if drain and not (drain["verified"]["ok"] and drain["verified"]["client_distinct_ok"]):
        print(f"\nDRAIN VERIFICATION FAILED: {drain['verified']}", file=sys.stderr)
        failed = True
    for name, latency in results["scenarios"].items():
        if name.startswith("latency") and (latency["missing"] or latency["complete_failures"]):
            print(
                f"\n{name}: ORDERS LOST: missing {latency['missing']}, "
                f"complete failures {latency['complete_failures']}",
                file=sys.stderr,
            )
            failed = True
    for failure in events.failures(results) + e2e.failures(results):
        print(f"\n{failure}", file=sys.stderr)
        failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
