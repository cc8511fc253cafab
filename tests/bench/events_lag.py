"""Journal fan-out: live SubscribeJournal streams behind a producer appending at a steady rate.

Every record carries, in its attributes, its sequence number and the
`perf_counter` instant its append call started. The subscribers run in this
process, so lag = time the subscriber received the record minus that instant:
the append itself (a durable commit), the wake-up, the subscription's read
and the stream write, all included.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from conveyor.events.v1 import messages_pb2 as m
from conveyor.events.v1 import service_pb2 as rpc
from conveyor.events.v1 import service_pb2_grpc
from tests.bench.scenarios import percentiles_ms

LAG_NAMESPACE = "bench-lag"
RECORD_TYPE = "bench.lag"

Probe = Callable[[str], Awaitable[None]]


@dataclass
class Subscriber:
    """One live subscription: what it received, in the order it received it."""

    sequences: list[int] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    lags: dict[int, float] = field(default_factory=dict)
    error: str = ""

    def verify(self, journal: list[int]) -> dict[str, Any]:
        """`journal`: the positions the appends returned, in position order.

        Appends overlap, so the journal's order (commit order) need not be the
        order the appends were started in: the subscriber must see exactly the
        appended positions, each once, in position order.
        """
        return {
            "received": len(self.sequences),
            "every_record_once_in_order": self.positions == journal,
            "distinct_records": len(set(self.sequences)),
            "error": self.error,
        }


@dataclass
class LagBench:
    stub: service_pb2_grpc.JournalServiceStub
    on_start: Probe
    on_stop: Probe

    async def _subscribe(self, subscriber: Subscriber, total: int, live: asyncio.Event) -> None:
        call = self.stub.SubscribeJournal(
            rpc.SubscribeJournalRequest(
                after_position=0, filter=rpc.JournalFilter(namespace=LAG_NAMESPACE)
            )
        )
        try:
            live.set()
            async for response in call:
                received = time.perf_counter()
                record = response.record
                seq = int(record.attributes["seq"])
                subscriber.sequences.append(seq)
                subscriber.positions.append(record.position)
                subscriber.lags[seq] = received - float(record.attributes["sent"])
                if len(subscriber.sequences) >= total:
                    return
        except grpc.aio.AioRpcError as exc:
            subscriber.error = f"{exc.code().name}: {exc.details()}"
        finally:
            call.cancel()

    async def _append(self, seq: int, rtts: dict[int, float], positions: list[int]) -> None:
        sent = time.perf_counter()
        response = await self.stub.AppendJournalRecords(
            rpc.AppendJournalRecordsRequest(
                records=[
                    m.JournalRecord(
                        id=f"bench-lag/{seq}",
                        type=RECORD_TYPE,
                        namespace=LAG_NAMESPACE,
                        subjects={"bench": "lag"},
                        attributes={"seq": str(seq), "sent": repr(sent)},
                    )
                ]
            )
        )
        rtts[seq] = time.perf_counter() - sent
        positions.extend(response.positions)

    async def subscribe_lag(
        self,
        subscribers: int = 10,
        rate: float = 200.0,
        seconds: float = 10.0,
        warmup: float = 2.0,
        name: str = "subscribe_lag",
    ) -> dict[str, Any]:
        """`subscribers` live streams; one record per append call, paced at `rate` per second."""
        warm_n = int(rate * warmup)
        total = warm_n + int(rate * seconds)
        subs = [Subscriber() for _ in range(subscribers)]
        opened = [asyncio.Event() for _ in subs]
        tasks = [
            asyncio.ensure_future(self._subscribe(s, total, e))
            for s, e in zip(subs, opened, strict=True)
        ]
        for event in opened:
            await event.wait()
        await asyncio.sleep(0.3)  # the streams are open and parked, waiting for records
        rtts: dict[int, float] = {}
        positions: list[int] = []
        lateness: list[float] = []
        appends: set[asyncio.Task[None]] = set()
        start = time.perf_counter() + 0.01
        starter: asyncio.Future[None] | None = None
        start_hooks_at = max(0, warm_n - int(rate * 0.5))  # hooks run alongside, ahead of time
        for seq in range(total):
            target = start + seq / rate
            if seq == start_hooks_at:
                starter = asyncio.ensure_future(self.on_start(name))
            delay = target - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            lateness.append(max(0.0, time.perf_counter() - target))
            task = asyncio.ensure_future(self._append(seq, rtts, positions))
            appends.add(task)
            task.add_done_callback(appends.discard)
        produced_at = time.perf_counter()
        await asyncio.gather(*appends)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(15):
                await asyncio.gather(*tasks)
        if starter is not None:
            await starter
            await self.on_stop(name)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return _summary(
            subs, rtts, sorted(positions), lateness, rate, seconds, warm_n, produced_at - start
        )


def _summary(
    subs: list[Subscriber],
    rtts: dict[int, float],
    journal: list[int],
    lateness: list[float],
    rate: float,
    seconds: float,
    warm_n: int,
    produced_seconds: float,
) -> dict[str, Any]:
    total = len(lateness)
    measured = range(warm_n, total)
    per_subscriber = [
        {**percentiles_ms([s.lags[q] for q in measured if q in s.lags]), **s.verify(journal)}
        for s in subs
    ]
    overall = [s.lags[q] for s in subs for q in measured if q in s.lags]
    ok = len(journal) == total and all(
        p["every_record_once_in_order"] and p["distinct_records"] == total and not p["error"]
        for p in per_subscriber
    )
    worst = sorted(
        measured, key=lambda q: max((s.lags.get(q, 0.0) for s in subs), default=0), reverse=True
    )[:5]
    return {
        "rate": rate,
        "achieved_rate": round((total - warm_n) / max(produced_seconds - warm_n / rate, 1e-9), 1),
        "seconds": seconds,
        "subscribers": len(subs),
        "records": total - warm_n,
        "lag_ms": percentiles_ms(overall),
        "append_rpc_ms": percentiles_ms([rtts[q] for q in measured if q in rtts]),
        "pacing_lateness_ms": percentiles_ms(lateness[warm_n:]),
        "per_subscriber": per_subscriber,
        "slowest": [
            {
                "at_s": round((q - warm_n) / rate, 2),
                "max_lag_ms": round(max(s.lags.get(q, 0.0) for s in subs) * 1000, 1),
                "append_rpc_ms": round(rtts.get(q, float("nan")) * 1000, 1),
            }
            for q in worst
        ],
        "verified": {
            "ok": ok,
            "all_subscribers_every_record_once_in_order": ok,
            "received": [p["received"] for p in per_subscriber],
            "expected": total,
        },
    }
