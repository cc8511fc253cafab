"""The workflows the workflow-runtime tests host (namespace "wf"), on the fake shop.

`shop`: a producer polling the fake shop's orders, a consumer charging each one
through the fake payment API (one side effect per run, reconciled by looking the
charge up), and a consumer of the receipts that makes no side effect.
`tight`: a producer of five events and a consumer with an iteration budget of 2.
`bad`: producers returning what they must not.
`stuck`: a producer sleeping $CONVEYOR_TEST_STUCK_SECONDS (0 unless a test sets it).
The shop's URL comes from $CONVEYOR_EXAMPLE_SHOP_URL, read at call time.
"""

from __future__ import annotations

import asyncio
import json
import os
import urllib.error
import urllib.request
from typing import Any

import conveyor

app = conveyor.App("wf", version="test-1")
shop = app.workflow("shop", queue="shop-sessions")
tight = app.workflow("tight", queue="tight-sessions", iteration_budget=2)
bad = app.workflow("bad", queue="bad-sessions")


def _url(path: str) -> str:
    return os.environ["CONVEYOR_EXAMPLE_SHOP_URL"] + path


def _call(method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        _url(path), data=data, method=method, headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@shop.producer(schedule=conveyor.every(hours=1))
def poll_orders(ctx: conveyor.HandlerContext, state: dict[str, int] | None) -> conveyor.Produce:
    after = (state or {}).get("after", 0)
    orders = _call("GET", f"/orders?after={after}")
    events = [
        conveyor.Event("orders", f"order-{o['id']}", f"Order {o['id']} from {o['customer']}", o)
        for o in orders
    ]
    return conveyor.Produce(
        state={"after": max([after, *(o["id"] for o in orders)])}, events=events
    )


@shop.consumer(topic="orders", batch=1, debounce="0.2s")
class ChargeOrder:
    def prepare(self, ctx: conveyor.HandlerContext, state: dict[str, int] | None) -> dict[str, Any]:
        return {"order": ctx.events[0].payload, "charged": (state or {}).get("charged", 0)}

    def mutate(self, ctx: conveyor.HandlerContext, prepared: dict[str, Any]) -> Any:
        order = prepared["order"]
        try:
            return _call("POST", "/charges", {"order_id": order["id"], "amount": order["amount"]})
        except urllib.error.HTTPError as error:
            if error.code == 402:
                raise conveyor.MutationFailed(f"declined: {error.read()!r}") from error
            raise

    def next(
        self,
        ctx: conveyor.HandlerContext,
        prepared: dict[str, Any],
        result: conveyor.MutationResult,
    ) -> conveyor.Produce:
        order = prepared["order"]
        charged = prepared["charged"] + (1 if result.applied else 0)
        receipt = {"order_id": order["id"], "result": result.kind, "charge": result.value}
        return conveyor.Produce(
            state={"charged": charged},
            events=[
                conveyor.Event(
                    "receipts",
                    f"receipt-{order['id']}",
                    f"Receipt for order {order['id']}",
                    receipt,
                )
            ],
        )

    def reconcile(
        self, ctx: conveyor.HandlerContext, mutation: conveyor.MutationInfo
    ) -> conveyor.Reconciled:
        order = mutation.prepared["order"]
        try:
            return conveyor.Reconciled.applied(_call("GET", f"/charges/{order['id']}"))
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return conveyor.Reconciled.failed("no charge for the order")
            return conveyor.Reconciled.unknown(f"the ledger answered {error.code}")


@shop.consumer(topic="receipts", batch=10, debounce="0.2s")
class Notify:
    async def prepare(self, ctx: conveyor.HandlerContext, state: Any) -> list[Any]:
        return [e.payload for e in ctx.events]

    async def mutate(self, ctx: conveyor.HandlerContext, prepared: list[Any]) -> Any:
        return conveyor.NO_MUTATION

    async def next(
        self, ctx: conveyor.HandlerContext, prepared: list[Any], result: conveyor.MutationResult
    ) -> conveyor.Produce:
        assert result.kind == "none"
        return conveyor.Produce(state={"receipts": [p["order_id"] for p in prepared]})


@tight.producer(schedule=conveyor.every(hours=1))
async def burst(ctx: conveyor.HandlerContext, state: dict[str, int] | None) -> conveyor.Produce:
    start = (state or {}).get("next", 0)
    events = [
        conveyor.Event("jobs", f"job-{i}", f"Job {i}", {"i": i}) for i in range(start, start + 5)
    ]
    return conveyor.Produce(state={"next": start + 5}, events=events)


@tight.consumer(topic="jobs", batch=1, debounce="30s")
class Work:
    async def prepare(self, ctx: conveyor.HandlerContext, state: Any) -> int:
        ctx.record_usage(input_tokens=10, output_tokens=5, cost_usd=0.01, model="fake")
        return int(ctx.events[0].payload["i"])

    async def mutate(self, ctx: conveyor.HandlerContext, prepared: int) -> Any:
        return conveyor.NO_MUTATION

    async def next(
        self, ctx: conveyor.HandlerContext, prepared: int, result: conveyor.MutationResult
    ) -> None:
        return None


@bad.producer(schedule=conveyor.every(hours=1))
async def wrong_type(ctx: conveyor.HandlerContext, state: Any) -> Any:
    return {"state": 1}


@bad.producer(schedule=conveyor.every(hours=1))
async def too_big(ctx: conveyor.HandlerContext, state: Any) -> conveyor.Produce:
    return conveyor.Produce(events=[conveyor.Event("sink", "big", "A big event", "x" * 300_000)])


@bad.producer(schedule=conveyor.every(hours=1))
async def state_too_big(ctx: conveyor.HandlerContext, state: Any) -> conveyor.Produce:
    return conveyor.Produce(state={"blob": "s" * (1024 * 1024 + 1)})


@bad.producer(schedule=conveyor.every(hours=1))
async def fill_hoard(ctx: conveyor.HandlerContext, state: Any) -> conveyor.Produce:
    return conveyor.Produce(events=[conveyor.Event("hoard", "h-1", "One event to hoard", {})])


@bad.consumer(topic="hoard", batch=1, debounce="1h")
class Hoarder:
    """Its prepare returns more than MAX_PREPARED_BYTES: the run fails, the event goes back."""

    async def prepare(self, ctx: conveyor.HandlerContext, state: Any) -> Any:
        return {"blob": "p" * (1024 * 1024 + 1)}

    async def mutate(self, ctx: conveyor.HandlerContext, prepared: Any) -> Any:
        raise AssertionError("mutate must not run after an oversize prepare")

    async def next(
        self, ctx: conveyor.HandlerContext, prepared: Any, result: conveyor.MutationResult
    ) -> None:
        return None


@bad.consumer(topic="sink", batch=1, debounce="1h")
class Sink:
    async def prepare(self, ctx: conveyor.HandlerContext, state: Any) -> Any:
        return None

    async def mutate(self, ctx: conveyor.HandlerContext, prepared: Any) -> Any:
        return conveyor.NO_MUTATION

    async def next(
        self, ctx: conveyor.HandlerContext, prepared: Any, result: conveyor.MutationResult
    ) -> None:
        return None


# Two producers of one workflow keep their own timing (and a consumer for their events).
timing = app.workflow("timing", queue="timing-sessions")


@timing.producer(schedule=conveyor.every(minutes=5))
async def every_five_minutes(ctx: conveyor.HandlerContext, state: Any) -> conveyor.Produce:
    return conveyor.Produce()


@timing.producer(schedule=conveyor.cron("0 * * * *", tz="Europe/Berlin"))
async def hourly(ctx: conveyor.HandlerContext, state: Any) -> conveyor.Produce:
    return conveyor.Produce()


# A producer that never returns by itself: its session stops only when its order does.
stuck = app.workflow("stuck", queue="stuck-sessions")


@stuck.producer(schedule=conveyor.every(hours=1))
async def hang(ctx: conveyor.HandlerContext, state: Any) -> conveyor.Produce:
    await asyncio.sleep(float(os.environ.get("CONVEYOR_TEST_STUCK_SECONDS", "0")))
    return conveyor.Produce()
