"""The workflow `make run` shows: a producer polling a fake shop, a consumer charging each
order through a fake payment API, one charge whose answer is lost, reconciled by nobody
(the payment ledger is down too), suspended with its prompt, and resolved by a person.

Everything is real: the fake shop and payment API are an HTTP server on 127.0.0.1
(conveyor_core.fake_shop), the app below is hosted by the embedded executor, and the
walkthrough reads the runtime's records through WorkflowService like any client.
"""

from __future__ import annotations

import asyncio
import json
import os
import urllib.error
import urllib.request
from typing import Any

import grpc

import conveyor
from conveyor.executor.v1 import workflow_pb2 as wf_pb
from conveyor.executor.v1 import workflow_pb2_grpc as wf_grpc
from conveyor_core.fake_shop import FakeShop
from conveyor_core.grpc import create_channel

app = conveyor.App("default", version="example-1")
shop = app.workflow("shop")
CUSTOMERS = ["ada", "grace", "linus", "barbara", "ken", "margaret"]


def _call(method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        os.environ["CONVEYOR_EXAMPLE_SHOP_URL"] + path,
        data=data,
        method=method,
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


@shop.producer(schedule=conveyor.every(seconds=3))
def poll_orders(ctx: conveyor.HandlerContext, state: dict[str, int] | None) -> conveyor.Produce:
    after = (state or {}).get("after", 0)
    orders = _call("GET", f"/orders?after={after}")
    return conveyor.Produce(
        state={"after": max([after, *(o["id"] for o in orders)])},
        events=[
            conveyor.Event("orders", f"order-{o['id']}", f"Order {o['id']} from {o['customer']}", o)
            for o in orders
        ],
    )


@shop.consumer(topic="orders", batch=1, debounce="0.5s")
class ChargeOrder:
    def prepare(self, ctx: conveyor.HandlerContext, state: Any) -> dict[str, Any]:
        return {"order": ctx.events[0].payload}

    def mutate(self, ctx: conveyor.HandlerContext, prepared: dict[str, Any]) -> Any:
        order = prepared["order"]
        try:
            return _call("POST", "/charges", {"order_id": order["id"], "amount": order["amount"]})
        except urllib.error.HTTPError as error:
            if error.code == 402:
                raise conveyor.MutationFailed("card declined") from error
            raise

    def next(
        self,
        ctx: conveyor.HandlerContext,
        prepared: dict[str, Any],
        result: conveyor.MutationResult,
    ) -> conveyor.Produce:
        ctx.logger.info("order %s: %s", prepared["order"]["id"], result.kind)
        return conveyor.Produce()

    def reconcile(
        self, ctx: conveyor.HandlerContext, mutation: conveyor.MutationInfo
    ) -> conveyor.Reconciled:
        try:
            found = _call("GET", f"/charges/{mutation.prepared['order']['id']}")
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return conveyor.Reconciled.failed("no charge recorded")
            return conveyor.Reconciled.unknown(f"payment ledger answered {error.code}")
        return conveyor.Reconciled.applied(found)


def start_shop() -> FakeShop:
    fake = FakeShop().start()
    os.environ["CONVEYOR_EXAMPLE_SHOP_URL"] = fake.url
    return fake


async def run_workflow_example(address: str, fake: FakeShop, period: float = 4.0) -> None:
    """Add an order every `period` seconds; the third one's charge answer is lost."""
    seen: set[str] = set()
    async with create_channel(address) as channel:
        stub = wf_grpc.WorkflowServiceStub(channel)
        for index in range(len(CUSTOMERS)):
            mode = "apply_then_cut_unknown" if index == 2 else ""
            order = fake.add_order(CUSTOMERS[index], 10 * (index + 1), mode=mode)
            print(f"[workflow] the shop took order {order['id']} from {order['customer']}")
            await asyncio.sleep(period)
            await _report(stub, seen)
        for _ in range(30):
            await _report(stub, seen)
            await asyncio.sleep(1)


async def _report(stub: wf_grpc.WorkflowServiceAsyncStub, seen: set[str]) -> None:
    try:
        runs = (
            await stub.ListHandlerRuns(
                wf_pb.ListHandlerRunsRequest(parent="namespaces/default", workflow="shop")
            )
        ).handler_runs
    except grpc.aio.AioRpcError:
        return
    for run in reversed(runs):
        key = f"{run.name}:{run.phase}"
        if run.handler != "charge_order" or not run.events or key in seen:
            continue
        seen.add(key)
        title = run.events[0].title
        if run.phase == wf_pb.HANDLER_PHASE_COMMITTED:
            print(f"[workflow] {title}: charged ({run.mutation_result.kind}), committed")
        elif run.phase == wf_pb.HANDLER_PHASE_SUSPENDED:
            print(f"[workflow] {title}: SUSPENDED, waiting for a person:\n    {run.prompt}")
            print(
                "[workflow] resolve it with ResolveMutation (operator role), e.g.\n"
                f'    grpcurl -plaintext -d \'{{"name": "{run.name}", "resolution": '
                '"RESOLUTION_APPLIED", "reason": "seen in the payment dashboard", '
                '"resolved_by": "you"}\' <address> '
                "conveyor.executor.v1.WorkflowService/ResolveMutation"
            )
            print("[workflow] (the example resolves it itself in 10 s)")
            _PENDING.add(asyncio.create_task(_resolve_later(stub, run.name)))


_PENDING: set[asyncio.Task[None]] = set()


async def _resolve_later(stub: wf_grpc.WorkflowServiceAsyncStub, name: str) -> None:
    await asyncio.sleep(10)  # the walkthrough's person takes a moment to look
    await stub.ResolveMutation(
        wf_pb.ResolveMutationRequest(
            name=name,
            resolution=wf_pb.RESOLUTION_APPLIED,
            reason="the example's operator checked the payment dashboard",
            resolved_by="example-operator",
        )
    )
    print(f"[workflow] {name}: resolved APPLIED by example-operator; the run resumes")
