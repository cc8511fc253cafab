"""End-to-end bench: no-op HTTP jobs through queue -> executor, and schedule slots -> runs.

The platform runs as production would on PostgreSQL + Redis: four server
processes (`conveyor serve events|queue|scheduler|executor`, each pointed at
the others with CONVEYOR_QUEUE_ADDRESS / CONVEYOR_EVENTS_ADDRESS /
CONVEYOR_JOURNAL_ADDRESS), ONE executor process, and the no-op HTTP service
the jobs call in a fifth process (tests/bench/e2e_http.py). This process only
submits, creates schedules and reads results over the public gRPC APIs.

- e2e_throughput: N work orders, each a JobInvocation of one GET to the no-op
  service, submitted in batches to the queue `jobs`; rate = N / (first submit ->
  the queue showing all N SUCCEEDED). Verified: every order SUCCEEDED once
  (attempt 1) and the executor has exactly one SUCCEEDED run per order.
- e2e_slot_latency: S interval schedules (every E seconds, anchors staggered
  evenly over E) on one no-op HTTP job; for every run whose slot falls in the
  measured window, latency = Run.start_time - Run.slot_time. Verified: one run
  per (schedule, slot), and every slot of the window has a run.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from conveyor.common.v1 import job_pb2, types_pb2
from conveyor.executor.v1 import messages_pb2 as executor_pb
from conveyor.executor.v1 import service_pb2 as executor_rpc
from conveyor.executor.v1 import service_pb2_grpc as executor_grpc
from conveyor.queue.v1 import messages_pb2 as queue_pb
from conveyor.queue.v1 import service_pb2 as queue_rpc
from conveyor.queue.v1 import service_pb2_grpc as queue_grpc
from conveyor.scheduler.v1 import messages_pb2 as scheduler_pb
from conveyor.scheduler.v1 import service_pb2 as scheduler_rpc
from conveyor.scheduler.v1 import service_pb2_grpc as scheduler_grpc
from conveyor_core.grpc import create_channel
from tests.bench.cpu import CpuWindow
from tests.bench.environment import ScratchDatabase, ServerProcess, redis_url
from tests.bench.scenarios import percentiles_ms

SCENARIOS = ("e2e_throughput", "e2e_slot_latency")
NAMESPACE = "bench"
PARENT = f"namespaces/{NAMESPACE}"
QUEUE = "jobs"
SCHEDULES_PER_JOB = 25  # below CONVEYOR_SCHEDULER_MAX_SCHEDULES_PER_JOB (32)
JOB_INVOCATION_CONTENT_TYPE = "application/x-protobuf; messageType=conveyor.common.v1.JobInvocation"
HEALTH = {
    "events": "conveyor.events.v1.EventStoreService",
    "queue": "conveyor.queue.v1.WorkOrderQueueService",
    "scheduler": "conveyor.scheduler.v1.SchedulerService",
    "executor": "conveyor.executor.v1.ExecutorService",
}
OUT_DIR = Path(".bench")
IDLE_SECONDS = 3.0  # the idle window before e2e_throughput


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("end-to-end (tests/bench/e2e.py)")
    group.add_argument("--e2e-orders", type=int, default=2_000, help="orders of e2e_throughput")
    group.add_argument("--e2e-schedules", type=int, default=300)
    group.add_argument("--e2e-every", type=float, default=30.0, help="schedules' interval (s)")
    group.add_argument("--e2e-window", type=float, default=60.0, help="slot window (s)")
    group.add_argument(
        "--e2e-concurrency",
        type=int,
        default=64,
        help="CONVEYOR_EXECUTOR_CONCURRENCY of the one executor process",
    )
    group.add_argument(
        "--profile-process",
        default="executor",
        choices=["executor", "queue", "scheduler", "events"],
        help="which server process --profile e2e_* records",
    )


def executor_env(args: argparse.Namespace) -> dict[str, str]:
    """The executor's settings for throughput (reported with the figures)."""
    return {
        "CONVEYOR_EXECUTOR_NAMESPACE": NAMESPACE,
        "CONVEYOR_EXECUTOR_QUEUES": f'["{QUEUE}"]',
        "CONVEYOR_EXECUTOR_CONCURRENCY": str(args.e2e_concurrency),
        "CONVEYOR_EXECUTOR_MAX_LEASE_BATCH": str(min(args.e2e_concurrency, 1000)),
        "CONVEYOR_EXECUTOR_LEASE_WAIT_SECONDS": "1",
        "CONVEYOR_EXECUTOR_WORKER_IDENTITY": "bench-executor",
    }


class Platform:
    """The four server processes and the no-op HTTP service, started in dependency order."""

    def __init__(self, database: ScratchDatabase, prefix: str, args: argparse.Namespace) -> None:
        self._database = database
        self._prefix = prefix
        self._args = args
        self.servers: dict[str, ServerProcess] = {}
        self.http: subprocess.Popen[str] | None = None
        self.url = ""

    def start(self) -> dict[str, Any]:
        self.http = subprocess.Popen(
            [sys.executable, "-m", "tests.bench.e2e_http"],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        assert self.http.stdout is not None
        self.url = f"http://127.0.0.1:{int(self.http.stdout.readline())}/noop"
        info: dict[str, Any] = {"http": {"pid": self.http.pid, "url": self.url}}
        peers: dict[str, str] = {}
        for name in ("events", "queue", "scheduler", "executor"):
            env = dict(peers)
            if name == "executor":
                env.update(executor_env(self._args))
            server = ServerProcess(
                self._database.url,
                redis_url(),
                self._prefix,
                OUT_DIR / f"server-e2e-{name}.log",
                name,
                HEALTH[name],
                extra_env=env,
            )
            self.servers[name] = server
            server.start()
            ready = asyncio.run(server.wait_ready())
            info[name] = {"pid": server.pid, "ready_seconds": round(ready, 2), "env": env}
            print(f"  e2e {name} pid {server.pid} on {server.address} ({ready:.1f} s)", flush=True)
            if name == "events":
                peers["CONVEYOR_EVENTS_ADDRESS"] = server.address
                peers["CONVEYOR_JOURNAL_ADDRESS"] = server.address
            if name == "queue":
                peers["CONVEYOR_QUEUE_ADDRESS"] = server.address
        return info

    def pids(self) -> dict[str, int]:
        out = {name: s.pid for name, s in self.servers.items()}
        if self.http is not None:
            out["http"] = self.http.pid
        return out

    def check_alive(self) -> None:
        for name, server in self.servers.items():
            if server.process is not None and server.process.poll() is not None:
                raise RuntimeError(f"e2e {name} server died:\n{server.log_tail()}")

    def stop(self) -> dict[str, Any]:
        codes: dict[str, Any] = {}
        for name in ("executor", "scheduler", "queue", "events"):
            if name in self.servers:
                codes[name] = self.servers[name].stop()
        if self.http is not None and self.http.poll() is None:
            self.http.send_signal(signal.SIGTERM)
            out, _ = self.http.communicate(timeout=10)
            codes["http"] = out.strip().splitlines()[-1] if out.strip() else None
        return codes


class Windows:
    """CPU of every process over each measured window and, if asked, py-spy on one of them."""

    def __init__(self, platform: Platform, database: str, args: argparse.Namespace) -> None:
        self._platform = platform
        self._database = database
        self._profile = set(filter(None, args.profile.split(",")))
        self._target = args.profile_process
        self._format = args.profile_format
        self._window = CpuWindow(platform.pids(), database)
        self._spy: subprocess.Popen[bytes] | None = None
        self.cpu: dict[str, dict[str, float]] = {}
        self.elapsed: dict[str, float] = {}
        self.profiles: dict[str, str] = {}

    async def start(self, name: str) -> None:
        if "all" in self._profile or any(name.startswith(p) for p in self._profile):
            self._start_spy(name)
            await asyncio.sleep(0.3)  # attached before the window starts
        await asyncio.to_thread(self._window.start)

    async def stop(self, name: str) -> None:
        self.cpu[name], self.elapsed[name] = await asyncio.to_thread(self._window.stop)
        self._window = CpuWindow(self._platform.pids(), self._database)
        if self._spy is not None:
            self._spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            await asyncio.to_thread(self._spy.wait, 30)
            self._spy = None

    def close(self) -> None:
        self._window.close()

    def _start_spy(self, name: str) -> None:
        spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which(
            "py-spy"
        )
        if spy is None:
            print("  (py-spy not found: not profiling)", flush=True)
            return
        suffix = {"flamegraph": "svg", "speedscope": "json", "raw": "txt"}[self._format]
        out = OUT_DIR / f"profile-{name}-{self._target}.{suffix}"
        self.profiles[f"{name}/{self._target}"] = str(out)
        pid = self._platform.servers[self._target].pid
        self._spy = subprocess.Popen(
            [
                spy,
                "record",
                "--pid",
                str(pid),
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


def http_target(url: str) -> job_pb2.JobTarget:
    endpoint = job_pb2.HttpEndpoint(
        name="noop",
        method="GET",
        url=url,
        timeout=Duration(seconds=10),
        retry_policy=types_pb2.RetryPolicy(maximum_attempts=1),
    )
    return job_pb2.JobTarget(http=job_pb2.HttpTarget(endpoints=[endpoint]))


def _seconds(stamp: Timestamp) -> float:
    return stamp.seconds + stamp.nanos / 1e9


async def list_runs(executor: executor_grpc.ExecutorServiceStub) -> list[executor_pb.Run]:
    runs: list[executor_pb.Run] = []
    token = ""
    while True:
        page = await executor.ListRuns(
            executor_rpc.ListRunsRequest(parent=PARENT, page_size=1000, page_token=token)
        )
        runs += page.runs
        token = page.next_page_token
        if not token:
            return runs


async def list_orders(
    queue: queue_grpc.WorkOrderQueueServiceStub, states: list[int] | None = None
) -> list[queue_pb.WorkOrder]:
    orders: list[queue_pb.WorkOrder] = []
    token = ""
    while True:
        page = await queue.ListWorkOrders(
            queue_rpc.ListWorkOrdersRequest(
                parent=f"{PARENT}/queues/{QUEUE}",
                states=states or [],
                page_size=1000,
                page_token=token,
            )
        )
        orders += page.work_orders
        token = page.next_page_token
        if not token:
            return orders


async def succeeded_in_queue(queue: queue_grpc.WorkOrderQueueServiceStub) -> dict[str, int]:
    stats = (
        await queue.GetQueueStats(queue_rpc.GetQueueStatsRequest(name=f"{PARENT}/queues/{QUEUE}"))
    ).stats
    return {
        queue_pb.WorkOrderState.Name(d.state).removeprefix("WORK_ORDER_STATE_"): d.count
        for d in stats.depth
        if d.count
    }


async def _submit(
    queue: queue_grpc.WorkOrderQueueServiceStub,
    url: str,
    total: int,
    batch: int = 100,
    concurrency: int = 4,
) -> list[str]:
    payload = types_pb2.Payload(
        data=job_pb2.JobInvocation(target=http_target(url)).SerializeToString(),
        content_type=JOB_INVOCATION_CONTENT_TYPE,
    )
    sizes = iter([min(batch, total - i) for i in range(0, total, batch)])
    names: list[str] = []

    async def loop() -> None:
        for size in sizes:
            reply = await queue.BatchSubmitWorkOrders(
                queue_rpc.BatchSubmitWorkOrdersRequest(
                    parent=f"{PARENT}/queues/{QUEUE}",
                    requests=[
                        queue_rpc.SubmitWorkOrderRequest(
                            work_order=queue_pb.WorkOrderSpec(payload=payload)
                        )
                        for _ in range(size)
                    ],
                )
            )
            names.extend(r.work_order.name for r in reply.responses)

    await asyncio.gather(*(loop() for _ in range(concurrency)))
    return names


async def _wait_succeeded(
    queue: queue_grpc.WorkOrderQueueServiceStub, expected: int, limit: float
) -> tuple[float, dict[str, int]]:
    """Poll until `expected` orders are SUCCEEDED; returns (perf_counter then, depth)."""
    deadline = time.perf_counter() + limit
    while True:
        depth = await succeeded_in_queue(queue)
        now = time.perf_counter()
        if depth.get("SUCCEEDED", 0) >= expected or now > deadline:
            return now, depth
        # GetQueueStats is not free (about an eighth of the queue's samples at 0.1 s in
        # the profile): poll gently; the rate comes from the orders' complete_time.
        await asyncio.sleep(0.5)


async def throughput(
    queue: queue_grpc.WorkOrderQueueServiceStub,
    executor: executor_grpc.ExecutorServiceStub,
    url: str,
    windows: Windows,
    total: int,
) -> dict[str, Any]:
    warmup = 200
    await _submit(queue, url, warmup)  # connections, pools and caches warm, not measured
    await _wait_succeeded(queue, warmup, 120)
    # What each process burns with nothing to do (lease long-polls, relays, health
    # checks): on a loaded machine the window is long, and this share of it is not the
    # orders' cost (`cpu_ms_per_order_net` takes it out).
    await windows.start("e2e_idle")
    await asyncio.sleep(IDLE_SECONDS)
    await windows.stop("e2e_idle")
    idle = windows.cpu.get("e2e_idle", {})
    expected = warmup + total
    await windows.start("e2e_throughput")
    started = time.perf_counter()
    wall_start = time.time()
    names = await _submit(queue, url, total)
    submitted = time.perf_counter() - started
    finished, depth = await _wait_succeeded(queue, expected, 120 + total / 10)
    await windows.stop("e2e_throughput")
    elapsed = finished - started
    runs = await list_runs(executor)
    verified = await _verify_throughput(queue, runs, names, expected, depth)
    measured = set(names)
    ends = [_seconds(r.end_time) for r in runs if r.work_order in measured]
    completes = [
        _seconds(o.complete_time)
        for o in await list_orders(queue, [queue_pb.WORK_ORDER_STATE_SUCCEEDED])
        if o.name in measured
    ]
    durations = [_seconds(r.end_time) - _seconds(r.start_time) for r in runs]
    seconds = max(completes) - wall_start if completes else elapsed
    busy = windows.cpu.get("e2e_throughput", {})
    window = windows.elapsed.get("e2e_throughput", elapsed)
    per_order = {k: round(v * window / 100 / total * 1000, 2) for k, v in busy.items()}
    net = {
        k: round(max(0.0, v - idle.get(k, 0.0)) * window / 100 / total * 1000, 2)
        for k, v in busy.items()
        if k != "other"
    }
    return {
        "idle_cpu_percent": idle,
        "cpu_ms_per_order": per_order,
        "cpu_ms_per_order_net": net,
        "orders": total,
        # first submit -> the last order's complete_time in the queue (same host clock)
        "seconds": round(seconds, 2),
        "orders_per_s": round(total / seconds, 1),
        "orders_per_s_by_poll": round(total / elapsed, 1),
        "orders_per_s_by_run_end": round(total / (max(ends) - wall_start), 1) if ends else 0.0,
        "submit_seconds": round(submitted, 2),
        "run_ms": percentiles_ms(durations),
        "verified": verified,
    }


async def _verify_throughput(
    queue: queue_grpc.WorkOrderQueueServiceStub,
    runs: list[executor_pb.Run],
    names: list[str],
    expected: int,
    depth: dict[str, int],
) -> dict[str, Any]:
    orders = await list_orders(queue, [queue_pb.WORK_ORDER_STATE_SUCCEEDED])
    listed = len(orders)
    attempts_not_1 = sum(1 for o in orders if o.attempt != 1)
    per_order = Counter(r.work_order for r in runs if r.state == executor_pb.RUN_STATE_SUCCEEDED)
    wanted = set(names)
    not_one = sum(1 for n in wanted if per_order.get(n, 0) != 1)
    other_states = Counter(
        executor_pb.RunState.Name(r.state)
        for r in runs
        if r.state != executor_pb.RUN_STATE_SUCCEEDED
    )
    ok = (
        depth == {"SUCCEEDED": expected}
        and listed == expected
        and attempts_not_1 == 0
        and len(wanted) == len(names)
        and not_one == 0
        and not other_states
    )
    return {
        "ok": ok,
        "depth": depth,
        "listed_succeeded": listed,
        "attempt_not_1": attempts_not_1,
        "orders_without_exactly_one_succeeded_run": not_one,
        "runs_not_succeeded": dict(other_states),
        "runs": len(runs),
    }


async def slot_latency(
    queue: queue_grpc.WorkOrderQueueServiceStub,
    scheduler: scheduler_grpc.SchedulerServiceStub,
    executor: executor_grpc.ExecutorServiceStub,
    url: str,
    windows: Windows,
    count: int,
    every: float,
    window: float,
) -> dict[str, Any]:
    jobs = []
    for j in range(math.ceil(count / SCHEDULES_PER_JOB)):  # the scheduler caps schedules/job
        reply = await scheduler.CreateJob(
            scheduler_rpc.CreateJobRequest(
                parent=PARENT,
                job_id=f"noop-{j}",
                job=scheduler_pb.Job(
                    target=http_target(url),
                    queue=QUEUE,
                    retry_policy=types_pb2.RetryPolicy(maximum_attempts=1),
                ),
            )
        )
        jobs.append(reply.job.name)
    lead = 5.0 + count / 100  # creating the schedules takes a moment
    base = datetime.now(UTC) + timedelta(seconds=lead)
    anchors = [base + timedelta(seconds=every * i / count) for i in range(count)]
    creations = iter(enumerate(anchors))

    async def create() -> None:
        for i, anchor in creations:
            stamp = Timestamp()
            stamp.FromDatetime(anchor)
            await scheduler.CreateSchedule(
                scheduler_rpc.CreateScheduleRequest(
                    parent=jobs[i // SCHEDULES_PER_JOB],
                    schedule_id=f"s{i}",
                    schedule=scheduler_pb.Schedule(
                        interval=scheduler_pb.IntervalSpec(
                            every=Duration(nanos=int(every * 1e9) % 10**9, seconds=int(every)),
                            anchor_time=stamp,
                        ),
                        overlap_policy=scheduler_pb.OVERLAP_POLICY_ALLOW_ALL,
                    ),
                )
            )

    await asyncio.gather(*(create() for _ in range(8)))
    # The window: slots in [start, end); the first few seconds of fires are a warm-up.
    start = base + timedelta(seconds=min(every, 5.0))
    end = start + timedelta(seconds=window)
    await asyncio.sleep(max(0.0, (start - datetime.now(UTC)).total_seconds()))
    await windows.start("e2e_slot_latency")
    await asyncio.sleep(max(0.0, (end - datetime.now(UTC)).total_seconds()))
    await windows.stop("e2e_slot_latency")
    expected = {
        (f"{jobs[i // SCHEDULES_PER_JOB]}/schedules/s{i}", slot)
        for i, anchor in enumerate(anchors)
        for slot in _slots(anchor, every, start, end)
    }
    result = await _collect_slots(executor, expected, start, end, count, every, window)
    result.update(await _split(queue, result.pop("_runs")))
    return result


def _slots(anchor: datetime, every: float, start: datetime, end: datetime) -> list[float]:
    step = timedelta(seconds=every)
    k = max(0, math.ceil((start - anchor) / step))
    out = []
    while anchor + k * step < end:
        out.append(round((anchor + k * step).timestamp(), 3))
        k += 1
    return out


async def _collect_slots(
    executor: executor_grpc.ExecutorServiceStub,
    expected: set[tuple[str, float]],
    start: datetime,
    end: datetime,
    count: int,
    every: float,
    window: float,
) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:  # runs of the window's last slots may still be starting: poll with a deadline
        runs = [
            r
            for r in await list_runs(executor)
            if r.schedule and start.timestamp() <= _seconds(r.slot_time) < end.timestamp()
        ]
        started = [r for r in runs if r.start_time.seconds]
        keys = {(r.schedule, round(_seconds(r.slot_time), 3)) for r in runs}
        if (expected <= keys and len(started) == len(runs)) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    per_slot = Counter((r.schedule, round(_seconds(r.slot_time), 3)) for r in runs)
    duplicates = sum(n - 1 for n in per_slot.values() if n > 1)
    missing = len(expected - set(per_slot))
    unexpected = len(set(per_slot) - expected)
    latencies = [_seconds(r.start_time) - _seconds(r.slot_time) for r in started]
    states = Counter(executor_pb.RunState.Name(r.state) for r in runs)
    return {
        "schedules": count,
        "every_seconds": every,
        "window_seconds": window,
        "runs": len(runs),
        "runs_per_s": round(len(runs) / window, 1),
        "latency_ms": percentiles_ms(latencies),
        "run_ms": percentiles_ms(
            [_seconds(r.end_time) - _seconds(r.start_time) for r in started if r.end_time.seconds]
        ),
        "_runs": started,
        "states": dict(states),
        "verified": {
            "ok": duplicates == 0 and missing == 0 and unexpected == 0,
            "expected_slots": len(expected),
            "duplicate_runs": duplicates,
            "missing_slots": missing,
            "unexpected_slots": unexpected,
        },
    }


async def _split(
    queue: queue_grpc.WorkOrderQueueServiceStub, runs: list[executor_pb.Run]
) -> dict[str, Any]:
    """Where the latency goes: slot -> order queued (scheduler), queued -> run start (executor)."""
    queued = {o.name: _seconds(o.create_time) for o in await list_orders(queue)}
    fire, lease = [], []
    for run in runs:
        if run.work_order in queued:
            fire.append(queued[run.work_order] - _seconds(run.slot_time))
            lease.append(_seconds(run.start_time) - queued[run.work_order])
    return {
        "slot_to_queued_ms": percentiles_ms(fire),
        "queued_to_run_start_ms": percentiles_ms(lease),
    }


async def _scenarios(
    args: argparse.Namespace,
    platform: Platform,
    windows: Windows,
    selected: set[str],
    out: dict[str, Any],
) -> None:
    quick = args.quick
    servers = platform.servers
    async with (
        create_channel(servers["queue"].address) as queue_channel,
        create_channel(servers["scheduler"].address) as scheduler_channel,
        create_channel(servers["executor"].address) as executor_channel,
    ):
        queue = queue_grpc.WorkOrderQueueServiceStub(queue_channel)
        scheduler = scheduler_grpc.SchedulerServiceStub(scheduler_channel)
        executor = executor_grpc.ExecutorServiceStub(executor_channel)

        def record(name: str, result: dict[str, Any]) -> None:
            result["cpu_percent"] = windows.cpu.get(name, {})
            result["executor_settings"] = executor_env(args)
            out[name] = result
            print(f"  {name}: done", flush=True)
            platform.check_alive()

        if "e2e_throughput" in selected:
            total = 1_000 if quick else args.e2e_orders
            record(
                "e2e_throughput",
                await throughput(queue, executor, platform.url, windows, total),
            )
        if "e2e_slot_latency" in selected:
            record(
                "e2e_slot_latency",
                await slot_latency(
                    queue,
                    scheduler,
                    executor,
                    platform.url,
                    windows,
                    count=50 if quick else args.e2e_schedules,
                    every=5.0 if quick else args.e2e_every,
                    window=10.0 if quick else args.e2e_window,
                ),
            )


def run(
    args: argparse.Namespace,
    database: ScratchDatabase,
    prefix: str,
    selected: set[str],
    results: dict[str, Any],
) -> None:
    """Start the platform, run the selected e2e scenarios, stop it (on failure too).

    Its own database (`<bench database>_e2e`, dropped at the end) and Redis
    prefix: the scheduler scenario of the queue suite leaves its 10,000
    schedules in the bench database, which this suite's scheduler would fire.
    """
    own = ScratchDatabase(database.admin, name=f"{database.name}_e2e")
    platform = Platform(own, f"{prefix}e2e:", args)
    info = results.setdefault("servers", {}).setdefault("e2e", {})
    windows: Windows | None = None
    try:
        asyncio.run(own.create())
        info.update(platform.start())
        windows = Windows(platform, own.name, args)
        asyncio.run(_scenarios(args, platform, windows, selected, results["scenarios"]))
        if windows.profiles:
            results.setdefault("profiles", {}).update(windows.profiles)
    finally:
        if windows is not None:
            windows.close()
        info["exit"] = platform.stop()
        asyncio.run(own.drop())


def failures(results: dict[str, Any]) -> list[str]:
    out = []
    for name in SCENARIOS:
        result = results["scenarios"].get(name)
        if result and not result["verified"]["ok"]:
            out.append(f"{name}: VERIFICATION FAILED: {result['verified']}")
    return out
