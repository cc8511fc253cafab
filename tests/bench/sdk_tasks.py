"""Python tasks through the SDK, end to end, on PostgreSQL + Redis (part of `make bench`).

    python -m tests.bench.sdk_tasks [--tasks 3000] [--rate 200] [--seconds 10]
    python -m tests.bench.sdk_tasks --tasks 2000 --seconds 0 --profile worker   # py-spy the worker

Starts `conveyor serve queue events` and `conveyor worker tests.bench.sdk_tasks:app` as
two processes on a scratch database, then from this process (the SDK's Client):

* throughput: submits --tasks no-op tasks (64 submits in flight) and times until the
  queue counts them all SUCCEEDED: tasks/s from the first submit to the last result;
* latency: submits at --rate per second for --seconds; each task returns the time it
  started; submit-to-start p50/p99 (one machine, one clock).

The throughput window reports the CPU each process used per task (ms of CPU per task:
worker, platform, PostgreSQL, the bench client, the rest of the machine) from /proc
(`tests.bench.cpu`). `--profile worker|platform` records that window with py-spy
(raw collapsed stacks, .bench/profile-sdk-<process>.txt; summarise with
`python -m tests.bench.profile_summary`). Prints the figures and writes .bench/sdk_tasks.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc

import conveyor
from conveyor.queue.v1 import messages_pb2 as queue_pb
from conveyor.queue.v1 import service_pb2 as queue_rpc
from conveyor.queue.v1 import service_pb2_grpc as queue_grpc
from conveyor_core.grpc import create_channel
from tests.bench.cpu import CpuWindow, machine_busy
from tests.bench.environment import (
    ScratchDatabase,
    ServerProcess,
    admin_url,
    delete_redis_prefix,
    redis_url,
)
from tests.bench.otlp_sink import OtlpSink
from tests.helpers import leftovers
from tests.helpers.polling import eventually

OUT = Path(".bench")
#: --tracing: the servers' tracing settings (exported adds the receiver's endpoint).
TRACING = {
    "off": {"CONVEYOR_TRACE_SAMPLE_RATIO": "0"},
    "recorded": {"CONVEYOR_TRACE_SAMPLE_RATIO": "1"},
    "exported": {"CONVEYOR_TRACE_SAMPLE_RATIO": "1"},
}
app = conveyor.App("bench", queue="noop")


@app.task(retry=conveyor.Retry(max_attempts=1))
async def noop() -> float:
    return time.time()


async def _succeeded(channel: grpc.aio.Channel) -> int:
    stats = await queue_grpc.WorkOrderQueueServiceStub(channel).GetQueueStats(
        queue_rpc.GetQueueStatsRequest(name="namespaces/bench/queues/noop")
    )
    depth = {d.state: d.count for d in stats.stats.depth}
    return int(depth.get(queue_pb.WORK_ORDER_STATE_SUCCEEDED, 0))


async def _all_succeeded(channel: grpc.aio.Channel, count: int) -> None:
    """Until the queue counts `count` SUCCEEDED; one channel, polled every 0.1 s (the poll,
    a stats query, is not free for the queue)."""

    async def done() -> bool:
        return await _succeeded(channel) >= count

    await eventually(done, f"{count} tasks SUCCEEDED", 600, every=0.1)


def _spy(pid: int, out: Path) -> subprocess.Popen[bytes] | None:
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        print("  (py-spy not found: not profiling)", flush=True)
        return None
    command = [spy, "record", "--pid", str(pid), "--rate", "250", "--nonblocking"]
    command += ["--format", "raw", "--output", str(out)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def measured(
    pids: dict[str, int],
    database: str,
    count: int,
    window_of: Callable[[], Awaitable[dict[str, Any]]],
    profile: str = "",
) -> dict[str, Any]:
    """What `window_of` returns, with the CPU of each process over it (and py-spy if asked)
    per task of its `count`."""
    window = CpuWindow(pids, database)
    spy = _spy(pids[profile], OUT / f"profile-sdk-{profile}.txt") if profile else None
    if spy is not None:
        await asyncio.sleep(0.5)  # attached before the window starts
    try:
        await asyncio.to_thread(window.start)
        result = await window_of()
        percent, seconds = await asyncio.to_thread(window.stop)
    finally:
        window.close()
        if spy is not None:
            spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            await asyncio.to_thread(spy.wait, 30)
    result["cpu_percent"] = {k: round(v, 1) for k, v in percent.items()}
    result["cpu_ms_per_task"] = {
        k: round(v / 100 * seconds * 1000 / count, 3) for k, v in percent.items()
    }
    return result


async def throughput(address: str, tasks: int) -> dict[str, Any]:
    async with create_channel(address) as channel, conveyor.Client(address) as client:
        before = await _succeeded(channel)
        gate = asyncio.Semaphore(64)

        async def one() -> None:
            async with gate:
                await client.submit(noop)

        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(tasks)))
        submitted = time.perf_counter() - started
        await _all_succeeded(channel, before + tasks)
        elapsed = time.perf_counter() - started
    return {
        "tasks": tasks,
        "tasks_per_second": round(tasks / elapsed, 1),
        "submit_seconds": round(submitted, 2),
        "elapsed_seconds": round(elapsed, 2),
    }


async def latency(
    address: str,
    rate: float,
    seconds: float,
    pids: dict[str, int],
    database: str,
    profile: str = "",
) -> dict[str, Any]:
    """Submits at `rate` for `seconds`, measured (`measured`) until the last task started;
    the submit-to-start delays are read afterwards, so reading adds nothing to the window."""
    submitted: list[tuple[float, conveyor.TaskHandle[float]]] = []
    count = int(rate * seconds)
    async with conveyor.Client(address) as client, create_channel(address) as channel:
        before = await _succeeded(channel)

        async def window() -> dict[str, Any]:
            async def one() -> None:
                at = time.time()
                submitted.append((at, await client.submit(noop)))

            pending = []
            begin = time.perf_counter()
            for i in range(count):
                await asyncio.sleep(max(0.0, begin + i / rate - time.perf_counter()))
                pending.append(asyncio.create_task(one()))
            await asyncio.gather(*pending)
            await _all_succeeded(channel, before + count)
            return {"rate": rate, "count": count}

        result = await measured(pids, database, count, window, profile)
        gate = asyncio.Semaphore(16)

        async def delay(at: float, handle: conveyor.TaskHandle[float]) -> float:
            async with gate:
                return (await handle.result(timeout=120) - at) * 1000

        delays = sorted(await asyncio.gather(*(delay(at, h) for at, h in submitted)))
    return {
        **result,
        "submit_to_start_p50_ms": round(statistics.median(delays), 2),
        "submit_to_start_p99_ms": round(delays[int(len(delays) * 0.99) - 1], 2),
        "submit_to_start_max_ms": round(delays[-1], 2),
    }


def busy_before(seconds: float) -> float:
    """Percent of one core the machine was busy over `seconds` (all processes)."""
    first = machine_busy()
    time.sleep(seconds)
    return round((machine_busy() - first) / seconds * 100, 1)


async def _ready(*servers: ServerProcess) -> None:
    for server in servers:
        await server.wait_ready()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=10.0, help="0: no latency window")
    parser.add_argument(
        "--concurrency", type=int, default=256, help="the worker's slots (async tasks: cheap)"
    )
    parser.add_argument("--lease-batch", type=int, default=64, help="most orders per lease")
    parser.add_argument("--profile", choices=["", "worker", "platform"], default="")
    parser.add_argument(
        "--tracing",
        choices=list(TRACING),
        default="recorded",
        help="off: sample ratio 0; recorded: ratio 1, no collector (the default "
        "settings); exported: ratio 1, spans exported over OTLP to a receiver here",
    )
    parser.add_argument(
        "--profile-window",
        choices=["throughput", "latency"],
        default="throughput",
        help="the window --profile records",
    )
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        tracing_env = dict(TRACING[args.tracing])
        sink = stack.enter_context(OtlpSink()) if args.tracing == "exported" else None
        if sink is not None:
            tracing_env["CONVEYOR_OTLP_ENDPOINT"] = sink.endpoint
        results = _run(args, tracing_env)
        results["tracing"] = args.tracing
        if sink is not None:
            results["spans_exported"] = sink.spans()
    OUT.mkdir(exist_ok=True)
    (OUT / "sdk_tasks.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return 0


def _run(args: argparse.Namespace, tracing_env: dict[str, str]) -> dict[str, Any]:
    database = ScratchDatabase(admin_url())
    prefix = f"conveyor-bench:{leftovers.current_run_id()}:"
    asyncio.run(database.create())
    platform = ServerProcess(
        database.url,
        redis_url(),
        prefix,
        OUT / "sdk-platform.log",
        "queue",
        extra_env=tracing_env,
    )
    platform.command[-1:] = ["queue", "events"]
    worker = ServerProcess(
        database.url,
        redis_url(),
        prefix,
        OUT / "sdk-worker.log",
        "executor",
        "conveyor.executor.v1.ExecutorService",
        extra_env={
            "CONVEYOR_EXECUTOR_CONCURRENCY": str(args.concurrency),
            "CONVEYOR_EXECUTOR_MAX_LEASE_BATCH": str(args.lease_batch),
            "CONVEYOR_EXECUTOR_LEASE_WAIT_SECONDS": "1",
            **tracing_env,
        },
    )
    worker.command[-2:] = [
        "worker",
        "tests.bench.sdk_tasks:app",
        "--address",
        platform.address,
        "--listen",
        worker.address,
    ]
    results: dict[str, Any] = {}
    try:
        platform.start()
        asyncio.run(_ready(platform))
        worker.start()
        asyncio.run(_ready(worker))
        asyncio.run(throughput(platform.address, 200))  # warm-up: connections, plans
        pids = {"worker": worker.pid, "platform": platform.pid}
        results["machine_busy_before"] = busy_before(2.0)
        results["throughput"] = asyncio.run(
            measured(
                pids,
                database.name,
                args.tasks,
                lambda: throughput(platform.address, args.tasks),
                args.profile if args.profile_window == "throughput" else "",
            )
        )
        if args.seconds > 0:
            results["latency"] = asyncio.run(
                latency(
                    platform.address,
                    args.rate,
                    args.seconds,
                    pids,
                    database.name,
                    args.profile if args.profile_window == "latency" else "",
                )
            )
    finally:
        worker.stop()
        platform.stop()
        asyncio.run(database.drop())
        asyncio.run(delete_redis_prefix(redis_url(), prefix))
    return results


if __name__ == "__main__":
    sys.exit(main())
