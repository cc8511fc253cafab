"""The example `make run` shows: a producer submitting work and a worker draining it.

Everything goes through the public gRPC API, as a client in any language would.
"""

from __future__ import annotations

import asyncio
import json
import logging

from google.protobuf import duration_pb2

from conveyor.common.v1 import types_pb2
from conveyor.events.v1 import service_pb2 as events_rpc
from conveyor.events.v1 import service_pb2_grpc as events_grpc
from conveyor.queue.v1 import messages_pb2 as m
from conveyor.queue.v1 import service_pb2 as rpc
from conveyor.queue.v1 import service_pb2_grpc
from conveyor_core.grpc import create_channel

log = logging.getLogger(__name__)
QUEUE = "namespaces/demo/queues/example"


async def run_example(address: str, period: float = 2.0) -> None:
    async with create_channel(address) as channel:
        stub = service_pb2_grpc.WorkOrderQueueServiceStub(channel)
        journal = events_grpc.JournalServiceStub(channel)
        await asyncio.gather(_produce(stub, period), _work(stub, journal))


async def _produce(stub: service_pb2_grpc.WorkOrderQueueServiceStub, period: float) -> None:
    n = 0
    while True:
        n += 1
        body = json.dumps({"greeting": f"hello #{n}"}).encode()
        response = await stub.SubmitWorkOrder(
            rpc.SubmitWorkOrderRequest(
                parent=QUEUE,
                work_order=m.WorkOrderSpec(
                    priority=n % 3,
                    payload=types_pb2.Payload(data=body, content_type="application/json"),
                    idempotency_key=f"example-{n}",
                ),
            )
        )
        print(f"[example] submitted {response.work_order.id} (priority {n % 3})", flush=True)
        await asyncio.sleep(period)


async def _work(
    stub: service_pb2_grpc.WorkOrderQueueServiceStub, journal: events_grpc.JournalServiceStub
) -> None:
    while True:
        leased = await stub.LeaseWorkOrders(
            rpc.LeaseWorkOrdersRequest(
                parent="namespaces/demo",
                queues=["example"],
                max_work_orders=10,
                wait_time=duration_pb2.Duration(seconds=10),
                worker_identity="example-worker",
            )
        )
        for item in leased.work_orders:
            order = item.work_order
            greeting = json.loads(order.spec.payload.data)["greeting"]
            await stub.CompleteWorkOrder(
                rpc.CompleteWorkOrderRequest(
                    name=order.name,
                    lease_token=item.lease_token,
                    result=types_pb2.Payload(
                        data=greeting.upper().encode(), content_type="text/plain"
                    ),
                )
            )
            print(
                f"[example] worker completed {order.id}: {greeting!r} -> "
                f"{greeting.upper()!r} (attempt {order.attempt})",
                flush=True,
            )
            await _show_journal(journal, order.id)


async def _show_journal(journal: events_grpc.JournalServiceStub, order_id: str) -> None:
    """The order's life as the event store's journal recorded it (via the queue's outbox)."""
    types: list[str] = []
    for _ in range(50):  # the outbox relay delivers within milliseconds; allow a few seconds
        response = await journal.ReadJournal(
            events_rpc.ReadJournalRequest(
                filter=events_rpc.JournalFilter(namespace="demo", subject=order_id)
            )
        )
        types = [record.type.rsplit(".", 1)[-1] for record in response.records]
        if "succeeded" in types:
            break
        await asyncio.sleep(0.1)
    print(f"[example] journal of {order_id}: {' -> '.join(types)}", flush=True)
