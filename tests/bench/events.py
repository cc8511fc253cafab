"""Event-store workloads: publish throughput and reserve + commit, over the public gRPC API.

Like the queue scenarios, one client process (this one) drives the server:
concurrency is asyncio tasks on one channel. Each scenario has its own topic
and is warmed up on another topic before it is measured. The journal fan-out
scenario is in tests/bench/events_lag.py; `run_scenarios` runs them all.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from conveyor.common.v1 import types_pb2
from conveyor.events.v1 import messages_pb2 as m
from conveyor.events.v1 import service_pb2 as rpc
from conveyor.events.v1 import service_pb2_grpc
from conveyor_core.grpc import create_channel
from tests.bench.events_lag import LagBench
from tests.bench.scenarios import percentiles_ms

#: The gRPC service whose health SERVING means the event store is ready.
HEALTH_SERVICE = "conveyor.events.v1.EventStoreService"
SCENARIOS = ("publish_batch", "publish_single", "reserve_commit", "subscribe_lag")

NAMESPACE = "bench"
PARENT = f"namespaces/{NAMESPACE}"
PAYLOAD = types_pb2.Payload(data=b'{"task":"noop"}', content_type="application/json")

Probe = Callable[[str], Awaitable[None]]


def topic_name(topic: str) -> str:
    return f"{PARENT}/topics/{topic}"


def _drafts(prefix: str, start: int, count: int) -> list[m.EventDraft]:
    return [
        m.EventDraft(message_id=f"{prefix}-{i}", title="bench event", payload=PAYLOAD)
        for i in range(start, start + count)
    ]


def _publish_result(
    total: int,
    elapsed: float,
    concurrency: int,
    rtts: list[float],
    sequences: list[int],
    stats: dict[str, Any],
    **extra: Any,
) -> dict[str, Any]:
    """A publish scenario's figures; verified when the sequences are 1..total with no gap
    and the topic holds exactly `total` pending events."""
    contiguous = _contiguous(sequences, total)
    return {
        "events": total,
        "seconds": round(elapsed, 3),
        "events_per_s": round(total / elapsed, 1),
        **extra,
        "concurrency": concurrency,
        "rpc_ms": percentiles_ms(rtts),
        "verified": {
            "ok": contiguous and stats["pending"] == total,
            "sequences_contiguous": contiguous,
            "stats": stats,
        },
    }


def _contiguous(sequences: list[int], total: int) -> bool:
    """Sequences 1..total, each once: nothing lost, nothing doubled, no gap."""
    return len(sequences) == total and sorted(sequences) == list(range(1, total + 1))


@dataclass
class EventBench:
    """The client side of the event-store scenarios; hooks bracket each measured window."""

    stub: service_pb2_grpc.EventStoreServiceStub
    on_start: Probe
    on_stop: Probe
    worker: str = field(default_factory=lambda: f"bench-{socket.gethostname()}-{os.getpid()}")

    # -- building blocks -----------------------------------------------------------------

    async def create_topic(self, topic: str) -> str:
        await self.stub.CreateTopic(rpc.CreateTopicRequest(parent=PARENT, topic_id=topic))
        return topic_name(topic)

    async def publish_batches(
        self, topic: str, total: int, batch: int, concurrency: int, sequences: list[int]
    ) -> tuple[float, list[float]]:
        """Publish `total` new events in batches; returns (seconds, call round trips).

        The requests are built before the clock starts, so the client's own
        protobuf building is not in the measured rate.
        """
        requests = iter(
            [
                rpc.PublishEventsRequest(
                    parent=topic, events=_drafts(topic, start, min(batch, total - start))
                )
                for start in range(0, total, batch)
            ]
        )
        rtts: list[float] = []
        started = time.perf_counter()

        async def loop() -> None:
            for request in requests:
                sent = time.perf_counter()
                response = await self.stub.PublishEvents(request)
                rtts.append(time.perf_counter() - sent)
                assert not any(response.already_published), "a fresh message id was a repeat"
                sequences.extend(e.sequence for e in response.events)

        await asyncio.gather(*(loop() for _ in range(concurrency)))
        return time.perf_counter() - started, rtts

    async def pending(self, topic: str) -> dict[str, int]:
        stats = (await self.stub.GetTopicStats(rpc.GetTopicStatsRequest(name=topic))).stats
        return {
            "pending": stats.pending,
            "reserved": stats.reserved,
            "consumed": stats.consumed,
            "skipped": stats.skipped,
        }

    # -- scenarios -------------------------------------------------------------------------

    async def publish_batch(
        self, batch: int = 100, concurrency: int = 4, total: int = 20_000
    ) -> dict[str, Any]:
        """PublishEvents of `batch` events to one topic, `concurrency` calls in flight."""
        warm = await self.create_topic("warmup-publish-batch")
        await self.publish_batches(warm, batch * concurrency * 2, batch, concurrency, [])
        topic = await self.create_topic("publish-batch")
        sequences: list[int] = []
        await self.on_start("publish_batch")
        elapsed, rtts = await self.publish_batches(topic, total, batch, concurrency, sequences)
        await self.on_stop("publish_batch")
        stats = await self.pending(topic)
        return _publish_result(total, elapsed, concurrency, rtts, sequences, stats, batch=batch)

    async def publish_single(
        self, concurrency: int = 32, seconds: float = 5.0, warmup: float = 1.0
    ) -> dict[str, Any]:
        """PublishEvents of one event per call, `concurrency` calls in flight, for `seconds`."""

        async def run(topic: str, window: float, rtts: list[float], sequences: list[int]) -> float:
            counter = iter(range(10**9))
            started = time.perf_counter()
            until = started + window

            async def loop() -> None:
                while time.perf_counter() < until:
                    request = rpc.PublishEventsRequest(
                        parent=topic, events=_drafts(topic, next(counter), 1)
                    )
                    sent = time.perf_counter()
                    response = await self.stub.PublishEvents(request)
                    rtts.append(time.perf_counter() - sent)
                    sequences.append(response.events[0].sequence)

            await asyncio.gather(*(loop() for _ in range(concurrency)))
            return time.perf_counter() - started

        await run(await self.create_topic("warmup-publish-single"), warmup, [], [])
        topic = await self.create_topic("publish-single")
        rtts: list[float] = []
        sequences: list[int] = []
        await self.on_start("publish_single")
        elapsed = await run(topic, seconds, rtts, sequences)
        await self.on_stop("publish_single")
        stats = await self.pending(topic)
        return _publish_result(len(sequences), elapsed, concurrency, rtts, sequences, stats)

    async def reserve_commit(
        self, total: int = 20_000, max_events: int = 100, consumers: int = 4
    ) -> dict[str, Any]:
        """Consumers reserve up to `max_events` and Commit them (consume + state) until empty."""
        warm = await self.create_topic("warmup-reserve")
        await self.publish_batches(warm, 2_000, 500, 4, [])
        await Consumers(self.stub, warm, "warmup", max_events, consumers, self.worker).run()
        topic = await self.create_topic("reserve-commit")
        preload, _ = await self.publish_batches(topic, total, 500, 4, [])
        group = Consumers(self.stub, topic, "consumer", max_events, consumers, self.worker)
        await self.on_start("reserve_commit")
        result = await group.run()
        await self.on_stop("reserve_commit")
        result["verified"] = await group.verify(total, await self.pending(topic))
        result.update(
            {
                "events": total,
                "events_per_s": round(result["distinct"] / result["seconds"], 1),
                "seconds": round(result["seconds"], 3),
                "max_events": max_events,
                "consumers": consumers,
                "preload_seconds": round(preload, 3),
            }
        )
        return result


class Consumers:
    """`count` consumer loops on one topic, each a handler with its own versioned state.

    A loop: ReserveEvents (a fresh run id), then Commit(run id, consume the
    topic, state at the version the loop last stored), until a reserve comes
    back empty. Every reserved sequence is remembered with its run id, so
    `verify` can check each event was consumed once, by the run that held it.
    """

    def __init__(
        self,
        stub: service_pb2_grpc.EventStoreServiceStub,
        topic: str,
        handler_prefix: str,
        max_events: int,
        count: int,
        worker: str,
    ) -> None:
        self._stub = stub
        self._topic = topic
        self._handlers = [f"{PARENT}/handlers/{handler_prefix}-{i}/state" for i in range(count)]
        self._max = max_events
        self._worker = worker
        self.reserved_by: dict[int, str] = {}
        self.duplicates = 0
        self.consumed_counts = 0
        self.commits = [0] * count
        self.versions = [0] * count
        self.reserve_rtt: list[float] = []
        self.commit_rtt: list[float] = []

    async def run(self) -> dict[str, Any]:
        started = time.perf_counter()
        ended = await asyncio.gather(*(self._loop(i) for i in range(len(self._handlers))))
        return {
            "distinct": len(self.reserved_by),
            "duplicate_reservations": self.duplicates,
            "seconds": max(ended) - started,
            "reserve_rpc_ms": percentiles_ms(self.reserve_rtt),
            "commit_rpc_ms": percentiles_ms(self.commit_rtt),
            "commits": sum(self.commits),
            "mean_reserved": round(len(self.reserved_by) / max(sum(self.commits), 1), 1),
        }

    async def _loop(self, index: int) -> float:
        """One consumer; returns when its last commit was answered."""
        handler = self._handlers[index]
        self.versions[index] = (
            await self._stub.GetState(rpc.GetStateRequest(name=handler))
        ).state.version
        last = time.perf_counter()
        for call in range(10**9):
            run_id = f"{self._worker}-{handler.split('/')[3]}-{call}"
            sent = time.perf_counter()
            reserved = await self._stub.ReserveEvents(
                rpc.ReserveEventsRequest(parent=self._topic, run_id=run_id, max_events=self._max)
            )
            got = time.perf_counter()
            if not reserved.events:
                return last  # SKIP LOCKED: empty means nothing pending is left
            self.reserve_rtt.append(got - sent)
            for event in reserved.events:
                self.duplicates += event.sequence in self.reserved_by
                self.reserved_by[event.sequence] = run_id
            response = await self._stub.Commit(self._commit(index, run_id, len(reserved.events)))
            last = time.perf_counter()
            self.commit_rtt.append(last - got)
            self.consumed_counts += response.consumed_count
            self.commits[index] += 1
            self.versions[index] = response.state.version
        raise AssertionError("unreachable")

    def _commit(self, index: int, run_id: str, count: int) -> rpc.CommitRequest:
        state = json.dumps({"runs": self.commits[index] + 1, "last": count}).encode()
        return rpc.CommitRequest(
            parent=PARENT,
            run_id=run_id,
            consume_topics=[self._topic],
            state=rpc.StateWrite(
                name=self._handlers[index],
                expected_version=self.versions[index],
                data=types_pb2.Payload(data=state, content_type="application/json"),
            ),
        )

    async def verify(self, total: int, stats: dict[str, int]) -> dict[str, Any]:
        """Every event consumed exactly once, by the run that reserved it; none left pending."""
        consumed_by: dict[int, str] = {}
        token = ""
        while True:
            page = await self._stub.ListEvents(
                rpc.ListEventsRequest(
                    parent=self._topic,
                    statuses=[m.EVENT_STATUS_CONSUMED],
                    page_size=1000,
                    page_token=token,
                )
            )
            consumed_by.update((e.sequence, e.consumed_by) for e in page.events)
            token = page.next_page_token
            if not token:
                break
        wrong_run = sum(1 for s, run in consumed_by.items() if self.reserved_by.get(s) != run)
        versions = [
            (await self._stub.GetState(rpc.GetStateRequest(name=h))).state.version
            for h in self._handlers
        ]
        checks = {
            "stats_all_consumed": stats
            == {"pending": 0, "reserved": 0, "consumed": total, "skipped": 0},
            "listed_consumed": len(consumed_by) == total,
            "consumed_by_reserving_run": wrong_run == 0,
            "client_distinct": len(self.reserved_by) == total and self.duplicates == 0,
            "consumed_counts": self.consumed_counts == total,
            "state_versions": versions == self.commits,
        }
        return {"ok": all(checks.values()), **checks, "stats": stats, "state_versions": versions}


# -- the suite: wired into tests/bench/run.py --------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("event store")
    group.add_argument("--publish-events", type=int, default=20_000, help="events per batch run")
    group.add_argument("--publish-concurrency", type=int, default=4, help="batch calls in flight")
    group.add_argument("--reserve-events", type=int, default=20_000, help="events to consume")
    group.add_argument("--reserve-batch", type=int, default=100, help="max_events a reserve")
    group.add_argument("--reserve-consumers", type=int, default=4, help="consumer loops")
    group.add_argument("--lag-subscribers", type=int, default=10)
    group.add_argument(
        "--lag-rate", type=float, default=100.0, help="journal records appended per second"
    )


async def run_scenarios(
    args: argparse.Namespace,
    address: str,
    selected: set[str],
    windows: Any,
    results: dict[str, Any],
) -> None:
    """Run the selected event-store scenarios against the server at `address`.

    `windows` is run.py's `Windows` (CPU accounting and py-spy around each
    measured window); each result goes to `results["scenarios"][name]`.
    """
    quick = args.quick

    def record(name: str, result: dict[str, Any]) -> None:
        cpu = windows.cpu.get(name, {})
        result["cpu_percent"] = cpu
        if cpu and result.get("achieved_rate"):  # paced: CPU per second / rate
            per_record = cpu["server"] * 10 / result["achieved_rate"]
            result["server_cpu_ms_per_event"] = round(per_record, 3)
        else:
            result["server_cpu_ms_per_event"] = per_event_ms(
                cpu, windows.elapsed.get(name, 0.0), result.get("events", 0)
            )
        results["scenarios"][name] = result
        print(f"  {name}: done", flush=True)

    async with create_channel(address) as channel:
        bench = EventBench(
            service_pb2_grpc.EventStoreServiceStub(channel), windows.start, windows.stop
        )
        if "publish_batch" in selected:
            record(
                "publish_batch",
                await bench.publish_batch(
                    100, args.publish_concurrency, 5_000 if quick else args.publish_events
                ),
            )
        if "publish_single" in selected:
            record("publish_single", await bench.publish_single(32, 2.0 if quick else 5.0))
        if "reserve_commit" in selected:
            record(
                "reserve_commit",
                await bench.reserve_commit(
                    5_000 if quick else args.reserve_events,
                    args.reserve_batch,
                    args.reserve_consumers,
                ),
            )
        if "subscribe_lag" in selected:
            lag = LagBench(
                service_pb2_grpc.JournalServiceStub(channel), windows.start, windows.stop
            )
            record(
                "subscribe_lag",
                await lag.subscribe_lag(
                    subscribers=args.lag_subscribers,
                    rate=args.lag_rate,
                    seconds=5.0 if quick else 10.0,
                ),
            )


def failures(results: dict[str, Any]) -> list[str]:
    """Verification failures of the event-store scenarios in `results` (empty: all good)."""
    out = []
    for name in SCENARIOS:
        result = results["scenarios"].get(name)
        if result is not None and not result["verified"]["ok"]:
            out.append(f"{name}: VERIFICATION FAILED: {result['verified']}")
    return out


def per_event_ms(cpu: dict[str, float], seconds: float, events: int) -> float | None:
    """Server CPU milliseconds per event over a window, from its percent of one core."""
    if not cpu or not events:
        return None
    return round(cpu["server"] * 10 * seconds / events, 3)
