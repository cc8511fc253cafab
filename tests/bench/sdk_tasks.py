"""Python tasks through the SDK, end to end, on PostgreSQL + Redis (part of `make bench`).

    python -m tests.bench.sdk_tasks [--tasks 3000] [--rate 200] [--seconds 10]

Starts `conveyor serve queue events` and `conveyor worker tests.bench.sdk_tasks:app` as
two processes on a scratch database, then from this process (the SDK's Client):

* throughput: submits --tasks no-op tasks (64 submits in flight) and times until the
  queue counts them all SUCCEEDED: tasks/s from the first submit to the last result;
* latency: submits at --rate per second for --seconds; each task returns the time it
  started; submit-to-start p50/p99 (one machine, one clock).

Prints the figures and writes .bench/sdk_tasks.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import conveyor
from conveyor.queue.v1 import messages_pb2 as queue_pb
from conveyor.queue.v1 import service_pb2 as queue_rpc
from conveyor.queue.v1 import service_pb2_grpc as queue_grpc
from conveyor_core.grpc import create_channel
from tests.bench.environment import (
    ScratchDatabase,
    ServerProcess,
    admin_url,
    delete_redis_prefix,
    redis_url,
)
from tests.helpers import leftovers

OUT = Path(".bench")
app = conveyor.App("bench", queue="noop")


@app.task(retry=conveyor.Retry(max_attempts=1))
async def noop() -> float:
    return time.time()


async def _succeeded(address: str) -> int:
    async with create_channel(address) as channel:
        stats = await queue_grpc.WorkOrderQueueServiceStub(channel).GetQueueStats(
            queue_rpc.GetQueueStatsRequest(name="namespaces/bench/queues/noop")
        )
    depth = {d.state: d.count for d in stats.stats.depth}
    return int(depth.get(queue_pb.WORK_ORDER_STATE_SUCCEEDED, 0))


async def throughput(address: str, tasks: int) -> dict[str, Any]:
    before = await _succeeded(address)
    gate = asyncio.Semaphore(64)
    async with conveyor.Client(address) as client:

        async def one() -> None:
            async with gate:
                await client.submit(noop)

        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(tasks)))
        submitted = time.perf_counter() - started
        while await _succeeded(address) - before < tasks:  # noqa: ASYNC110 - polls another process
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
    return {
        "tasks": tasks,
        "tasks_per_second": round(tasks / elapsed, 1),
        "submit_seconds": round(submitted, 2),
        "elapsed_seconds": round(elapsed, 2),
    }


async def latency(address: str, rate: float, seconds: float) -> dict[str, Any]:
    submitted: list[tuple[float, conveyor.TaskHandle[float]]] = []
    async with conveyor.Client(address) as client:

        async def one() -> None:
            at = time.time()
            submitted.append((at, await client.submit(noop)))

        pending = []
        begin = time.perf_counter()
        for i in range(int(rate * seconds)):
            await asyncio.sleep(max(0.0, begin + i / rate - time.perf_counter()))
            pending.append(asyncio.create_task(one()))
        await asyncio.gather(*pending)
        # Results are read after the window, so polling adds no load to what is measured.
        gate = asyncio.Semaphore(16)

        async def delay(at: float, handle: conveyor.TaskHandle[float]) -> float:
            async with gate:
                return (await handle.result(timeout=120) - at) * 1000

        delays = list(await asyncio.gather(*(delay(at, h) for at, h in submitted)))
    delays.sort()
    return {
        "rate": rate,
        "count": len(delays),
        "submit_to_start_p50_ms": round(statistics.median(delays), 2),
        "submit_to_start_p99_ms": round(delays[int(len(delays) * 0.99) - 1], 2),
        "submit_to_start_max_ms": round(delays[-1], 2),
    }


async def _ready(*servers: ServerProcess) -> None:
    for server in servers:
        await server.wait_ready()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    database = ScratchDatabase(admin_url())
    prefix = f"conveyor-bench:{leftovers.current_run_id()}:"
    asyncio.run(database.create())
    platform = ServerProcess(database.url, redis_url(), prefix, OUT / "sdk-platform.log", "queue")
    platform.command[-1:] = ["queue", "events"]
    worker = ServerProcess(
        database.url,
        redis_url(),
        prefix,
        OUT / "sdk-worker.log",
        "executor",
        "conveyor.executor.v1.ExecutorService",
        extra_env={
            "CONVEYOR_EXECUTOR_CONCURRENCY": "64",
            "CONVEYOR_EXECUTOR_MAX_LEASE_BATCH": "64",
            "CONVEYOR_EXECUTOR_LEASE_WAIT_SECONDS": "1",
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
        results["throughput"] = asyncio.run(throughput(platform.address, args.tasks))
        results["latency"] = asyncio.run(latency(platform.address, args.rate, args.seconds))
    finally:
        worker.stop()
        platform.stop()
        asyncio.run(database.drop())
        asyncio.run(delete_redis_prefix(redis_url(), prefix))
    OUT.mkdir(exist_ok=True)
    (OUT / "sdk_tasks.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
