"""A workflow consumer over pending events with a no-op mutate (issue 10; part of `make bench`).

    python -m tests.bench.workflow_consumer [--events 20000] [--batches 1,10,100]
        [--stores sqlite,postgres] [--profile worker|platform] [--profile-batch 10]

For each store (the embedded SQLite default, then PostgreSQL + Redis on a scratch
database) it starts `conveyor serve queue events scheduler` as one process. Then,
for each batch size, it publishes --events events to the topic of the workflow
`b<batch>` directly through `EventStoreService.PublishEvents` (batches of 1000),
and only then starts `conveyor worker tests.bench.workflow_consumer:app` (one
executor process hosting this module's app). The consumer's trigger fires a
session, which runs consumer runs (reserve `batch` events, prepare, mutate, next,
Commit) until the topic is empty; every phase checkpoint, every ledger row and
the state are durable as in production. The worker stops after each batch size.

events/s = events / (first consumer run's create_time -> last COMMITTED run's
end_time), both from the executor's own records (`ListHandlerRuns`); the bench
also polls `GetTopicStats` (consumed count) every 0.5 s from the worker's start,
which adds the start-up, registration, the debounce and the scheduler's fire.

Verified afterwards (a failure exits non-zero): the topic has `consumed ==
events`, nothing pending or reserved; every consumer run that held events is
COMMITTED and no run FAILED or is SUSPENDED; their events add up to --events;
the ledger has one APPLIED mutation per such run; the consumer's state has one
version per such run and counts every event.

The CPU of each process (from /proc) is measured from the first consumed events seen
to the last, and given per consumer run and per event too. Prints the figures and
writes .bench/workflow_consumer.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc

import conveyor
from conveyor.common.v1 import types_pb2
from conveyor.events.v1 import messages_pb2 as events_pb
from conveyor.events.v1 import service_pb2 as events_rpc
from conveyor.events.v1 import service_pb2_grpc as events_grpc
from conveyor.executor.v1 import workflow_pb2 as wf_pb
from conveyor.executor.v1 import workflow_pb2_grpc as wf_grpc
from conveyor_core.grpc import create_channel
from tests.bench.cpu import CpuWindow, machine_busy
from tests.bench.environment import (
    ScratchDatabase,
    ServerProcess,
    admin_url,
    delete_redis_prefix,
    redis_url,
)
from tests.helpers import leftovers

OUT = Path(".bench")
NAMESPACE = "wfbench"
# Batch 1 over 20,000 events takes over an hour here: run it with --events 2000 --batches 1.
BATCHES = (10, 100)
PUBLISH_BATCH = 1000
# The largest budget the SDK allows (App.workflow): a session runs at most this many
# consumer runs, so batch 1 over 20,000 events takes two sessions (a follow-up).
ITERATION_BUDGET = 10_000
PAYLOAD = types_pb2.Payload(
    data=b'{"amount":42,"customer":"bench"}', content_type="application/json"
)

app = conveyor.App(NAMESPACE, version="bench")


def _define(batch: int) -> None:
    workflow = app.workflow(
        f"b{batch}", queue=f"b{batch}-sessions", iteration_budget=ITERATION_BUDGET
    )

    @workflow.consumer(topic=f"b{batch}", batch=batch, name="no_op", debounce="0.1s")
    class NoOp:
        async def prepare(self, ctx: conveyor.HandlerContext, state: Any) -> dict[str, int]:
            return {"events": len(ctx.events), "seen": (state or {}).get("seen", 0)}

        async def mutate(self, ctx: conveyor.HandlerContext, prepared: dict[str, int]) -> Any:
            return None  # a no-op side effect: still an APPLIED row in the ledger

        async def next(
            self,
            ctx: conveyor.HandlerContext,
            prepared: dict[str, int],
            result: conveyor.MutationResult,
        ) -> conveyor.Produce:
            return conveyor.Produce(state={"seen": prepared["seen"] + prepared["events"]})


for _batch in BATCHES:
    _define(_batch)


def _topic(batch: int) -> str:
    return f"namespaces/{NAMESPACE}/topics/b{batch}"


def _seconds(stamp: Any) -> float:
    return stamp.ToNanoseconds() / 1e9


async def publish(address: str, batch: int, total: int) -> float:
    """Create the workflow's topic and publish `total` pending events; returns seconds."""
    async with create_channel(address) as channel:
        stub = events_grpc.EventStoreServiceStub(channel)
        try:
            await stub.CreateTopic(
                events_rpc.CreateTopicRequest(
                    parent=f"namespaces/{NAMESPACE}",
                    topic_id=f"b{batch}",
                    topic=events_pb.Topic(workflow=f"b{batch}"),
                )
            )
        except grpc.aio.AioRpcError as error:  # an earlier worker's registration made it
            if error.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise
        started = time.perf_counter()
        for start in range(0, total, PUBLISH_BATCH):
            drafts = [
                events_pb.EventDraft(message_id=f"e-{i}", title=f"event {i}", payload=PAYLOAD)
                for i in range(start, min(total, start + PUBLISH_BATCH))
            ]
            await stub.PublishEvents(
                events_rpc.PublishEventsRequest(parent=_topic(batch), events=drafts)
            )
        return time.perf_counter() - started


async def topic_stats(address: str, batch: int) -> events_pb.TopicStats:
    async with create_channel(address) as channel:
        stub = events_grpc.EventStoreServiceStub(channel)
        reply = await stub.GetTopicStats(events_rpc.GetTopicStatsRequest(name=_topic(batch)))
        return reply.stats


async def wait_consumed(
    address: str, batch: int, total: int, limit: float, on_first: Any = None
) -> dict[str, float]:
    """Poll the consumed count every 0.5 s until it reaches `total`; perf_counter times.
    `on_first()` is called when the first consumed events show."""
    started = time.perf_counter()
    first = 0.0
    async with create_channel(address) as channel:
        stub = events_grpc.EventStoreServiceStub(channel)
        while True:
            stats = (
                await stub.GetTopicStats(events_rpc.GetTopicStatsRequest(name=_topic(batch)))
            ).stats
            now = time.perf_counter()
            if stats.consumed and not first:
                first = now
                if on_first is not None:
                    on_first()
            if stats.consumed >= total:
                return {"first_consumed_seen": first - started, "all_consumed_seen": now - started}
            if now - started > limit:
                raise RuntimeError(
                    f"batch {batch}: {stats.consumed} of {total} consumed after {limit:.0f}s "
                    f"(pending {stats.pending}, reserved {stats.reserved})"
                )
            await asyncio.sleep(0.5)


async def _pages(call: Any, request: Any, field: str) -> list[Any]:
    out: list[Any] = []
    while True:
        reply = await call(request)
        out.extend(getattr(reply, field))
        if not reply.next_page_token:
            return out
        request.page_token = reply.next_page_token


async def records(worker: str, platform: str, batch: int, total: int) -> dict[str, Any]:
    """The executor's runs, sessions and ledger for workflow b<batch>: timing and checks."""
    parent = f"namespaces/{NAMESPACE}"
    workflow = f"b{batch}"
    async with create_channel(worker) as channel:
        stub = wf_grpc.WorkflowServiceStub(channel)
        runs = await _pages(
            stub.ListHandlerRuns,
            wf_pb.ListHandlerRunsRequest(parent=parent, workflow=workflow, page_size=1000),
            "handler_runs",
        )
        mutations = await _pages(
            stub.ListMutations,
            wf_pb.ListMutationsRequest(parent=parent, workflow=workflow, page_size=1000),
            "mutations",
        )
        sessions = await _pages(
            stub.ListSessions,
            wf_pb.ListSessionsRequest(parent=f"{parent}/workflows/{workflow}", page_size=1000),
            "sessions",
        )
    async with create_channel(platform) as channel:
        events = events_grpc.EventStoreServiceStub(channel)
        state = (
            await events.GetState(
                events_rpc.GetStateRequest(name=f"{parent}/handlers/{workflow}.no-op/state")
            )
        ).state
        stats = (
            await events.GetTopicStats(events_rpc.GetTopicStatsRequest(name=_topic(batch)))
        ).stats
    holding = [r for r in runs if r.events]
    problems = []
    if stats.consumed != total or stats.pending or stats.reserved:
        problems.append(
            f"topic: consumed {stats.consumed}, pending {stats.pending}, reserved {stats.reserved}"
        )
    bad = [r for r in runs if r.phase != wf_pb.HANDLER_PHASE_COMMITTED]
    if bad:
        problems.append(f"{len(bad)} runs not COMMITTED (first: {bad[0].name} {bad[0].phase})")
    held = sum(len(r.events) for r in holding)
    if held != total:
        problems.append(f"runs held {held} events, not {total}")
    applied = [m for m in mutations if m.state == wf_pb.MUTATION_STATE_APPLIED]
    if len(applied) != len(holding) or len(mutations) != len(holding):
        problems.append(
            f"{len(applied)} APPLIED of {len(mutations)} mutations for {len(holding)} runs"
        )
    seen = json.loads(state.data.data or b"{}").get("seen")
    if state.version != len(holding) or seen != total:
        problems.append(f"state version {state.version} (want {len(holding)}), seen {seen}")
    first = min(_seconds(r.create_time) for r in holding)
    last = max(_seconds(r.end_time or r.update_time) for r in holding)
    elapsed = last - first
    return {
        "events_per_second": round(total / elapsed, 1),
        "consumer_runs_per_second": round(len(holding) / elapsed, 1),
        "elapsed_seconds": round(elapsed, 2),
        "consumer_runs": len(holding),
        "handler_runs": len(runs),
        "sessions": len(sessions),
        "session_states": sorted(wf_pb.SessionState.Name(s.state) for s in sessions),
        "mutations_applied": len(applied),
        "state_version": state.version,
        "verified": not problems,
        "problems": problems,
    }


class Spy:
    """py-spy of one process, raw (collapsed stacks), stopped with SIGINT."""

    def __init__(self, pid: int, out: Path) -> None:
        spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which(
            "py-spy"
        )
        self.out = out
        self._process: subprocess.Popen[bytes] | None = None
        if spy is None:
            print("  (py-spy not found: .venv/bin/pip install py-spy; not profiling)", flush=True)
            return
        self._process = subprocess.Popen(
            [
                spy,
                "record",
                "--pid",
                str(pid),
                "--rate",
                "100",
                "--nonblocking",
                "--format",
                "raw",
                "--output",
                str(out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> str:
        if self._process is None:
            return ""
        self._process.send_signal(signal.SIGINT)
        self._process.wait(60)
        return str(self.out)


def run_store(store: str, args: argparse.Namespace, run_id: str) -> dict[str, Any]:
    data_dir = OUT / f"wf-{run_id}"
    prefix = f"conveyor-bench:{run_id}:wf:"
    database: ScratchDatabase | None = None
    if store == "postgres":
        database = ScratchDatabase(admin_url(), name=f"conveyor_bench_{run_id}_wf")
        asyncio.run(database.create())
        db_url, redis = database.url, redis_url()
    else:
        shutil.rmtree(data_dir, ignore_errors=True)
        data_dir.mkdir(parents=True)
        db_url, redis = "", ""
    env = {"CONVEYOR_DATA_DIR": str(data_dir.resolve())}
    platform = ServerProcess(
        db_url, redis, prefix, OUT / f"wf-{store}-platform.log", "queue", extra_env=env
    )
    platform.command[-1:] = ["queue", "events", "scheduler"]
    out: dict[str, Any] = {"store": store}
    if database is not None:
        out["postgres"] = asyncio.run(database.server_info())
    else:
        out["sqlite"] = "WAL, synchronous=NORMAL (conveyor_core.db), one file per service"
    try:
        platform.start()
        asyncio.run(platform.wait_ready())
        for batch in args.batches:
            out[f"batch_{batch}"] = run_batch(
                store, batch, args, platform, db_url, redis, prefix, env, database
            )
            print(f"[{store}] batch {batch}: {json.dumps(out[f'batch_{batch}'])}", flush=True)
    finally:
        platform.stop()
        if database is not None:
            asyncio.run(database.drop())
            asyncio.run(delete_redis_prefix(redis_url(), prefix))
        else:
            shutil.rmtree(data_dir, ignore_errors=True)
    return out


def run_batch(
    store: str,
    batch: int,
    args: argparse.Namespace,
    platform: ServerProcess,
    db_url: str,
    redis: str,
    prefix: str,
    env: dict[str, str],
    database: ScratchDatabase | None,
) -> dict[str, Any]:
    published = asyncio.run(publish(platform.address, batch, args.events))
    stats = asyncio.run(topic_stats(platform.address, batch))
    assert stats.pending == args.events, f"published {args.events}, pending {stats.pending}"
    worker = ServerProcess(
        db_url,
        redis,
        prefix,
        OUT / f"wf-{store}-worker-b{batch}.log",
        "executor",
        "conveyor.executor.v1.ExecutorService",
        extra_env={**env, "CONVEYOR_EXECUTOR_LEASE_WAIT_SECONDS": "1"},
    )
    worker.command[-2:] = [
        "worker",
        "tests.bench.workflow_consumer:app",
        "--address",
        platform.address,
        "--listen",
        worker.address,
    ]
    busy_before = machine_busy()
    wall_before = time.perf_counter()
    time.sleep(1.0)
    load_before = round(100 * (machine_busy() - busy_before) / (time.perf_counter() - wall_before))
    spy: Spy | None = None
    try:
        worker.start()
        window = CpuWindow(
            {"worker": worker.pid, "platform": platform.pid}, database.name if database else ""
        )
        # The CPU of the consuming: from the first consumed events seen to the last (the
        # worker's start-up, imports and registration are not the consumer's cost).
        if args.profile and batch == args.profile_batch:
            pid = worker.pid if args.profile == "worker" else platform.pid
            spy = Spy(pid, OUT / f"profile-wf-{store}-b{batch}-{args.profile}.txt")
        polled = asyncio.run(
            wait_consumed(platform.address, batch, args.events, args.timeout, window.start)
        )
        cpu, cpu_seconds = window.stop()
        window.close()
        profile = spy.stop() if spy else ""
        result = asyncio.run(records(worker.address, platform.address, batch, args.events))
    finally:
        if spy is not None:
            spy.stop()
        worker.stop()
    result.update(
        {
            "batch": batch,
            "events": args.events,
            "publish_seconds": round(published, 2),
            "worker_start_to_all_consumed_seconds": round(polled["all_consumed_seen"], 2),
            "worker_start_to_first_consumed_seconds": round(polled["first_consumed_seen"], 2),
            "cpu_percent": cpu,
            "cpu_window_seconds": round(cpu_seconds, 2),
            # CPU ms per consumer run and per event in that window, by process.
            "cpu_ms_per_run": {
                k: round(10 * v * cpu_seconds / max(1, result["consumer_runs"]), 2)
                for k, v in cpu.items()
            },
            "cpu_us_per_event": {
                k: round(10_000 * v * cpu_seconds / args.events, 1) for k, v in cpu.items()
            },
            "machine_busy_percent_before": load_before,
        }
    )
    if profile:
        result["profile"] = profile
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument(
        "--batches", type=lambda s: [int(b) for b in s.split(",")], default=list(BATCHES)
    )
    parser.add_argument("--stores", default="sqlite,postgres")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per batch size")
    parser.add_argument("--profile", choices=["worker", "platform"], default="")
    parser.add_argument("--profile-batch", type=int, default=10)
    args = parser.parse_args(argv)
    unknown = [b for b in args.batches if b not in BATCHES]
    if unknown:
        parser.error(f"batch sizes {unknown}: the app defines {list(BATCHES)}")
    run_id = leftovers.current_run_id()
    results: dict[str, Any] = {
        "command": " ".join(
            [Path(sys.executable).name, "-m", "tests.bench.workflow_consumer", *sys.argv[1:]]
        ),
        "start": datetime.now(UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "loadavg": os.getloadavg(),
    }
    ok = True
    for store in args.stores.split(","):
        results[store] = run_store(store, args, run_id)
        ok &= all(v.get("verified", True) for v in results[store].values() if isinstance(v, dict))
    OUT.mkdir(exist_ok=True)
    (OUT / "workflow_consumer.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
