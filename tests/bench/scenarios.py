"""The measured workloads, each on its own queue, driven over the public gRPC API.

One client process (this one) plays producer and worker, as one worker process
of any other queue library would: concurrency is asyncio tasks on one event
loop and one channel, never extra processes.
"""

from __future__ import annotations

import asyncio
import math
import os
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import duration_pb2

from conveyor.common.v1 import types_pb2
from conveyor.queue.v1 import messages_pb2 as m
from conveyor.queue.v1 import service_pb2 as rpc
from conveyor.queue.v1 import service_pb2_grpc

NAMESPACE = "bench"
PARENT = f"namespaces/{NAMESPACE}"
NOOP_PAYLOAD = types_pb2.Payload(data=b'{"task":"noop"}', content_type="application/json")
# Latency payloads carry (perf_counter at submit start, sequence number).
_STAMP = struct.Struct("<dI")


def queue_name(queue: str) -> str:
    return f"{PARENT}/queues/{queue}"


def duration(seconds: float) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromNanoseconds(int(seconds * 1e9))
    return out


def percentiles_ms(samples: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/max (nearest rank) and mean of samples in seconds, in milliseconds."""
    if not samples:
        return {}
    ordered = sorted(samples)

    def rank(p: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]

    return {
        "p50": round(rank(50) * 1000, 2),
        "p90": round(rank(90) * 1000, 2),
        "p99": round(rank(99) * 1000, 2),
        "max": round(ordered[-1] * 1000, 2),
        "mean": round(sum(ordered) / len(ordered) * 1000, 2),
        "n": len(ordered),
    }


Probe = Callable[[str], Awaitable[None]]


@dataclass
class Bench:
    """The client side of a run: the stub, and hooks called around each measured window.

    `on_start(name)` / `on_stop(name)` bracket each measured window (CPU
    accounting, optional profiler), so warm-ups and set-up are not counted.
    """

    stub: service_pb2_grpc.WorkOrderQueueServiceStub
    on_start: Probe
    on_stop: Probe
    worker: str = field(default_factory=lambda: f"bench-{socket.gethostname()}-{os.getpid()}")

    # -- building blocks -----------------------------------------------------

    async def submit_batches(self, queue: str, total: int, batch: int, concurrency: int) -> float:
        """Submit `total` no-op orders in batches; returns the seconds it took."""
        request = rpc.BatchSubmitWorkOrdersRequest(
            parent=queue_name(queue),
            requests=[
                rpc.SubmitWorkOrderRequest(work_order=m.WorkOrderSpec(payload=NOOP_PAYLOAD))
                for _ in range(batch)
            ],
        )
        batches = iter(range(math.ceil(total / batch)))
        started = time.perf_counter()

        async def loop() -> None:
            for _ in batches:
                response = await self.stub.BatchSubmitWorkOrders(request)
                assert len(response.responses) == batch

        await asyncio.gather(*(loop() for _ in range(concurrency)))
        return time.perf_counter() - started

    async def _drain(self, queue: str, max_batch: int, loops: int) -> dict[str, Any]:
        """Lease and batch-complete until the queue is empty, with `loops` concurrent loops."""
        lease_request = rpc.LeaseWorkOrdersRequest(
            parent=PARENT,
            queues=[queue],
            max_work_orders=max_batch,
            wait_time=duration(0),
            worker_identity=self.worker,
        )
        seen: set[str] = set()
        duplicates = 0
        failed_items = 0
        lease_rtt: list[float] = []
        complete_rtt: list[float] = []
        batch_sizes: list[int] = []
        first_lease: float | None = None
        last_complete = 0.0

        async def loop() -> None:
            nonlocal duplicates, failed_items, first_lease, last_complete
            while True:
                sent = time.perf_counter()
                if first_lease is None:
                    first_lease = sent
                response = await self.stub.LeaseWorkOrders(lease_request)
                leased = time.perf_counter()
                if not response.work_orders:
                    return  # SKIP LOCKED: empty means nothing QUEUED is left
                lease_rtt.append(leased - sent)
                batch_sizes.append(len(response.work_orders))
                for item in response.work_orders:
                    if item.work_order.id in seen:
                        duplicates += 1
                    seen.add(item.work_order.id)
                reply = await self.stub.BatchCompleteWorkOrders(
                    rpc.BatchCompleteWorkOrdersRequest(
                        parent=PARENT,
                        requests=[
                            rpc.CompleteWorkOrderRequest(
                                name=item.work_order.name, lease_token=item.lease_token
                            )
                            for item in response.work_orders
                        ],
                    )
                )
                done = time.perf_counter()
                complete_rtt.append(done - leased)
                last_complete = max(last_complete, done)
                failed_items += sum(1 for status in reply.statuses if status.code != 0)

        await asyncio.gather(*(loop() for _ in range(loops)))
        assert first_lease is not None
        return {
            "leased": len(seen) + duplicates,
            "distinct": len(seen),
            "duplicate_leases": duplicates,
            "complete_failures": failed_items,
            "seconds": last_complete - first_lease,
            "lease_rpc_ms": percentiles_ms(lease_rtt),
            "complete_rpc_ms": percentiles_ms(complete_rtt),
            "mean_lease_batch": round(sum(batch_sizes) / max(len(batch_sizes), 1), 1),
            "lease_calls": len(batch_sizes),
        }

    async def _verify_succeeded(self, queue: str, expected: int) -> dict[str, Any]:
        """Server-side check: `expected` orders, all SUCCEEDED, each leased exactly once."""
        stats = (
            await self.stub.GetQueueStats(rpc.GetQueueStatsRequest(name=queue_name(queue)))
        ).stats
        depth = {
            m.WorkOrderState.Name(d.state).removeprefix("WORK_ORDER_STATE_"): d.count
            for d in stats.depth
            if d.count
        }
        succeeded = 0
        attempts_other_than_one = 0
        token = ""
        while True:
            page = await self.stub.ListWorkOrders(
                rpc.ListWorkOrdersRequest(
                    parent=queue_name(queue),
                    states=[m.WORK_ORDER_STATE_SUCCEEDED],
                    page_size=1000,
                    page_token=token,
                )
            )
            succeeded += len(page.work_orders)
            attempts_other_than_one += sum(1 for o in page.work_orders if o.attempt != 1)
            token = page.next_page_token
            if not token:
                break
        ok = (
            depth == {"SUCCEEDED": expected}
            and succeeded == expected
            and attempts_other_than_one == 0
        )
        return {
            "ok": ok,
            "depth": depth,
            "listed_succeeded": succeeded,
            "attempt_not_1": attempts_other_than_one,
        }

    # -- scenarios -------------------------------------------------------------

    async def submit_single(
        self, concurrency: int = 32, seconds: float = 5.0, warmup: float = 1.0
    ) -> dict[str, Any]:
        """a. SubmitWorkOrder, one order a call, `concurrency` calls in flight."""

        async def run(queue: str, window: float, rtts: list[float]) -> tuple[int, float]:
            request = rpc.SubmitWorkOrderRequest(
                parent=queue_name(queue), work_order=m.WorkOrderSpec(payload=NOOP_PAYLOAD)
            )
            started = time.perf_counter()
            until = started + window

            async def loop() -> int:
                n = 0
                while time.perf_counter() < until:
                    sent = time.perf_counter()
                    await self.stub.SubmitWorkOrder(request)
                    rtts.append(time.perf_counter() - sent)
                    n += 1
                return n

            counts = await asyncio.gather(*(loop() for _ in range(concurrency)))
            return sum(counts), time.perf_counter() - started

        await run("warmup-submit", warmup, [])
        rtts: list[float] = []
        await self.on_start("submit_single")
        total, elapsed = await run("submit-single", seconds, rtts)
        await self.on_stop("submit_single")
        return {
            "orders": total,
            "seconds": round(elapsed, 3),
            "orders_per_s": round(total / elapsed, 1),
            "concurrency": concurrency,
            "rpc_ms": percentiles_ms(rtts),
        }

    async def submit_batched(
        self,
        batch: int,
        concurrency: int = 4,
        total: int = 20_000,
    ) -> dict[str, Any]:
        """b. BatchSubmitWorkOrders of `batch` orders, `concurrency` calls in flight."""
        name = f"submit_batch_{batch}"
        await self.submit_batches(f"warmup-batch-{batch}", batch * concurrency, batch, concurrency)
        await self.on_start(name)
        elapsed = await self.submit_batches(f"submit-batch-{batch}", total, batch, concurrency)
        await self.on_stop(name)
        orders = math.ceil(total / batch) * batch
        return {
            "orders": orders,
            "seconds": round(elapsed, 3),
            "orders_per_s": round(orders / elapsed, 1),
            "batch": batch,
            "concurrency": concurrency,
        }

    async def drain(
        self, total: int = 20_000, max_batch: int = 250, loops: int = 4, warmup_orders: int = 2_000
    ) -> dict[str, Any]:
        """c. One worker process drains `total` queued no-op orders (lease + batch complete)."""
        await self.submit_batches("warmup-drain", warmup_orders, 500, 4)
        await self._drain("warmup-drain", max_batch, loops)
        preload = await self.submit_batches("drain", total, 500, 4)
        await self.on_start("drain")
        result = await self._drain("drain", max_batch, loops)
        await self.on_stop("drain")
        verify = await self._verify_succeeded("drain", total)
        result["verified"] = verify
        result["verified"]["client_distinct_ok"] = (
            result["distinct"] == total
            and result["duplicate_leases"] == 0
            and result["complete_failures"] == 0
        )
        result.update(
            {
                "orders": total,
                "orders_per_s": round(result["distinct"] / result["seconds"], 1),
                "seconds": round(result["seconds"], 3),
                "max_batch": max_batch,
                "loops": loops,
                "preload_seconds": round(preload, 3),
            }
        )
        return result

    async def latency(
        self,
        rate: float = 200.0,
        seconds: float = 15.0,
        warmup: float = 2.0,
        wait: float = 5.0,
        max_batch: int = 50,
        name: str = "latency",
    ) -> dict[str, Any]:
        """d. Submit-to-lease latency at a steady `rate` of single submits, one long-poll leaser."""
        queue = name.replace("_", "-")
        warm_n = int(rate * warmup)
        total = warm_n + int(rate * seconds)
        latencies: dict[int, float] = {}
        submit_rtt: dict[int, float] = {}
        lateness: list[float] = []
        batch_sizes: list[int] = []
        complete_failures = 0
        background: set[asyncio.Task[Any]] = set()
        all_received = asyncio.Event()
        lease_request = rpc.LeaseWorkOrdersRequest(
            parent=PARENT,
            queues=[queue],
            max_work_orders=max_batch,
            wait_time=duration(wait),
            worker_identity=self.worker,
        )

        def spawn(coro: Awaitable[Any]) -> None:
            task = asyncio.ensure_future(coro)
            background.add(task)
            task.add_done_callback(background.discard)

        async def complete(items: Sequence[rpc.LeasedWorkOrder]) -> None:
            nonlocal complete_failures
            reply = await self.stub.BatchCompleteWorkOrders(
                rpc.BatchCompleteWorkOrdersRequest(
                    parent=PARENT,
                    requests=[
                        rpc.CompleteWorkOrderRequest(
                            name=i.work_order.name, lease_token=i.lease_token
                        )
                        for i in items
                    ],
                )
            )
            complete_failures += sum(1 for s in reply.statuses if s.code != 0)

        async def leaser() -> None:
            while True:
                response = await self.stub.LeaseWorkOrders(lease_request)
                received = time.perf_counter()
                if not response.work_orders:
                    continue
                batch_sizes.append(len(response.work_orders))
                for item in response.work_orders:
                    sent, seq = _STAMP.unpack(item.work_order.spec.payload.data)
                    latencies[seq] = received - sent
                spawn(complete(list(response.work_orders)))
                if len(latencies) >= total:
                    all_received.set()

        async def submit(seq: int) -> None:
            sent = time.perf_counter()
            await self.stub.SubmitWorkOrder(
                rpc.SubmitWorkOrderRequest(
                    parent=queue_name(queue),
                    work_order=m.WorkOrderSpec(
                        payload=types_pb2.Payload(data=_STAMP.pack(sent, seq))
                    ),
                )
            )
            submit_rtt[seq] = time.perf_counter() - sent

        leasing = asyncio.ensure_future(leaser())
        await asyncio.sleep(0.2)  # the leaser is parked in its long poll
        start = time.perf_counter() + 0.01
        # The measuring hooks start a process or two: run them alongside, half a second
        # before the measured orders, so they never hold up the pacing.
        starter: asyncio.Future[None] | None = None
        start_hooks_at = max(0, warm_n - int(rate * 0.5))
        for seq in range(total):
            target = start + seq / rate
            if seq == start_hooks_at:
                starter = asyncio.ensure_future(self.on_start(name))
            delay = target - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            lateness.append(max(0.0, time.perf_counter() - target))
            spawn(submit(seq))
        submitted_at = time.perf_counter()
        try:
            async with asyncio.timeout(10):
                await all_received.wait()
        except TimeoutError:
            pass
        if starter is not None:
            await starter
            await self.on_stop(name)
        leasing.cancel()
        await asyncio.gather(leasing, return_exceptions=True)
        await asyncio.gather(*background, return_exceptions=True)
        measured = [latencies[s] for s in range(warm_n, total) if s in latencies]
        achieved = (total - warm_n) / (submitted_at - (start + warm_n / rate))
        slowest = sorted(
            (s for s in range(warm_n, total) if s in latencies),
            key=latencies.__getitem__,
            reverse=True,
        )[:5]
        return {
            "rate": rate,
            "achieved_submit_rate": round(achieved, 1),
            "seconds": seconds,
            "orders": total - warm_n,
            "received": len(measured),
            "missing": (total - warm_n) - len(measured),
            "complete_failures": complete_failures,
            "latency_ms": percentiles_ms(measured),
            "submit_rpc_ms": percentiles_ms(
                [submit_rtt[s] for s in range(warm_n, total) if s in submit_rtt]
            ),
            "pacing_lateness_ms": percentiles_ms(lateness[warm_n:]),
            "mean_lease_batch": round(sum(batch_sizes) / max(len(batch_sizes), 1), 2),
            "wait_time_s": wait,
            "max_batch": max_batch,
            # When the worst ones were submitted (s into the window) and how much of
            # their latency the submit call itself took.
            "slowest": [
                {
                    "at_s": round((s - warm_n) / rate, 2),
                    "latency_ms": round(latencies[s] * 1000, 1),
                    "submit_rpc_ms": round(submit_rtt.get(s, float("nan")) * 1000, 1),
                }
                for s in slowest
            ],
        }
