"""gRPC servicer of WorkOrderQueueService: check, call the engine, translate back.

Requests are checked and turned into the engine's commands by api/validation.py;
the engine reads the clock and builds the store's parameters. Domain errors
propagate to the error interceptor, which maps them to gRPC status with rich
details; nothing here builds a status by hand.
"""

from __future__ import annotations

import hashlib

import grpc

from conveyor.common.v1 import types_pb2
from conveyor.queue.v1 import service_pb2 as rpc
from conveyor.queue.v1 import service_pb2_grpc
from conveyor_core import protoconv
from conveyor_core.pagination import PageTokens, page_size
from conveyor_queue.api import convert, validation
from conveyor_queue.domain import validation as names
from conveyor_queue.domain.commands import ListParams
from conveyor_queue.domain.model import WorkOrder
from conveyor_queue.engine import QueueEngine
from conveyor_queue.settings import QueueSettings

SERVICE_NAME = rpc.DESCRIPTOR.services_by_name["WorkOrderQueueService"].full_name


def _scope(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()


class WorkOrderQueueServicer(service_pb2_grpc.WorkOrderQueueServiceServicer):
    def __init__(self, engine: QueueEngine, page_tokens: PageTokens) -> None:
        self._engine = engine
        self._tokens = page_tokens

    @property
    def _settings(self) -> QueueSettings:
        return self._engine.settings

    def _page_size(self, requested: int) -> int:
        s = self._settings
        return page_size(requested, s.default_page_size, s.max_page_size)

    async def SubmitWorkOrder(self, request, context):  # type: ignore[no-untyped-def]
        [result] = await self._engine.submit([validation.submit_item(request)])
        return rpc.SubmitWorkOrderResponse(
            work_order=convert.order_to_pb(result.work_order), already_exists=result.already_exists
        )

    async def BatchSubmitWorkOrders(self, request, context):  # type: ignore[no-untyped-def]
        results = await self._engine.submit(validation.batch_submit_items(request))
        return rpc.BatchSubmitWorkOrdersResponse(
            responses=[
                rpc.SubmitWorkOrderResponse(
                    work_order=convert.order_to_pb(r.work_order), already_exists=r.already_exists
                )
                for r in results
            ]
        )

    async def LeaseWorkOrders(self, request, context):  # type: ignore[no-untyped-def]
        command = validation.lease_request(request, self._settings, context.peer())
        leased = await self._engine.lease(command)
        return rpc.LeaseWorkOrdersResponse(
            work_orders=[
                rpc.LeasedWorkOrder(
                    work_order=convert.order_to_pb(lw.work_order), lease_token=lw.lease_token
                )
                for lw in leased
            ]
        )

    async def HeartbeatWorkOrder(self, request, context):  # type: ignore[no-untyped-def]
        order = await self._engine.heartbeat(*validation.heartbeat(request, self._settings))
        return rpc.HeartbeatWorkOrderResponse(
            lease_expire_time=protoconv.ts(order.lease_expires_at),
            cancel_requested=order.cancel_requested,
        )

    async def CompleteWorkOrder(self, request, context):  # type: ignore[no-untyped-def]
        [result] = await self._engine.complete([validation.complete_params(request)])
        if isinstance(result, Exception):
            raise result
        assert isinstance(result, WorkOrder)  # not brief: the whole order
        return rpc.CompleteWorkOrderResponse(work_order=convert.order_to_pb(result))

    async def BatchCompleteWorkOrders(self, request, context):  # type: ignore[no-untyped-def]
        items = validation.batch_complete_params(request)
        results = await self._engine.complete(items, brief=True)
        return rpc.BatchCompleteWorkOrdersResponse(statuses=[_item_status(r) for r in results])

    async def FailWorkOrder(self, request, context):  # type: ignore[no-untyped-def]
        order = await self._engine.fail(validation.fail_attempt(request, self._settings))
        return rpc.FailWorkOrderResponse(work_order=convert.order_to_pb(order))

    async def CancelWorkOrder(self, request, context):  # type: ignore[no-untyped-def]
        ref = names.parse_work_order(request.name, "name")
        order = await self._engine.cancel(ref, request.reason, context.peer())
        return rpc.CancelWorkOrderResponse(work_order=convert.order_to_pb(order))

    async def GetWorkOrder(self, request, context):  # type: ignore[no-untyped-def]
        order = await self._engine.get(names.parse_work_order(request.name, "name"))
        return rpc.GetWorkOrderResponse(work_order=convert.order_to_pb(order))

    async def ListWorkOrders(self, request, context):  # type: ignore[no-untyped-def]
        queue = names.parse_queue(request.parent, "parent", allow_any=True)
        states = validation.list_states(request)
        newest = request.order == 2
        scope = _scope("orders", queue, states, request.concurrency_key, request.error_type, newest)
        cursor = self._tokens.decode(scope, request.page_token)
        size = self._page_size(request.page_size)
        rows = await self._engine.list(
            ListParams(
                queue,
                states,
                request.concurrency_key or None,
                request.error_type or None,
                validation.int_cursor(cursor, "seq"),
                size + 1,
                newest,
            )
        )
        page, token = self._tokens.next_page(rows, size, scope, lambda row: {"seq": row[0]})
        return rpc.ListWorkOrdersResponse(
            work_orders=[convert.order_to_pb(o) for _, o in page],
            next_page_token=token,
        )

    async def ListWorkOrderEvents(self, request, context):  # type: ignore[no-untyped-def]
        ref = names.parse_work_order(request.parent, "parent")
        scope = _scope("events", ref)
        after = validation.int_cursor(self._tokens.decode(scope, request.page_token), "seq") or 0
        size = self._page_size(request.page_size)
        events = await self._engine.events(ref, after, size + 1)
        page, token = self._tokens.next_page(events, size, scope, lambda e: {"seq": e.sequence})
        return rpc.ListWorkOrderEventsResponse(
            events=[convert.event_to_pb(e) for e in page],
            next_page_token=token,
        )

    async def GetWorkOrderPosition(self, request, context):  # type: ignore[no-untyped-def]
        position = await self._engine.position(names.parse_work_order(request.name, "name"))
        return rpc.GetWorkOrderPositionResponse(
            state=convert.STATE_TO_PB[position.state],
            ahead=position.ahead,
            estimated_start_time=protoconv.ts(position.estimated_start),
            dispatch_rate_per_second=position.dispatch_rate_per_second,
        )

    async def GetQueue(self, request, context):  # type: ignore[no-untyped-def]
        config = await self._engine.queue_get(names.parse_queue(request.name, "name"))
        return rpc.GetQueueResponse(queue=convert.queue_to_pb(config))

    async def ListQueues(self, request, context):  # type: ignore[no-untyped-def]
        namespace = names.parse_namespace(request.parent, "parent")
        scope = _scope("queues", namespace)
        cursor = self._tokens.decode(scope, request.page_token) or {}
        size = self._page_size(request.page_size)
        configs = await self._engine.queue_list(namespace, str(cursor.get("after", "")), size + 1)
        page, token = self._tokens.next_page(configs, size, scope, lambda c: {"after": c.queue})
        return rpc.ListQueuesResponse(
            queues=[convert.queue_to_pb(c) for c in page],
            next_page_token=token,
        )

    async def UpdateQueue(self, request, context):  # type: ignore[no-untyped-def]
        config, fields = validation.queue_update(request)
        return rpc.UpdateQueueResponse(
            queue=convert.queue_to_pb(await self._engine.queue_update(config, fields))
        )

    async def PauseQueue(self, request, context):  # type: ignore[no-untyped-def]
        config = await self._engine.queue_set_paused(names.parse_queue(request.name, "name"), True)
        return rpc.PauseQueueResponse(queue=convert.queue_to_pb(config))

    async def ResumeQueue(self, request, context):  # type: ignore[no-untyped-def]
        config = await self._engine.queue_set_paused(names.parse_queue(request.name, "name"), False)
        return rpc.ResumeQueueResponse(queue=convert.queue_to_pb(config))

    async def GetQueueStats(self, request, context):  # type: ignore[no-untyped-def]
        stats = await self._engine.stats(names.parse_queue(request.name, "name"))
        return rpc.GetQueueStatsResponse(stats=convert.stats_to_pb(stats))

    async def RedriveWorkOrders(self, request, context):  # type: ignore[no-untyped-def]
        redrive = await self._engine.redrive(validation.redrive_request(request))
        return rpc.RedriveWorkOrdersResponse(redrive=convert.redrive_to_pb(redrive))

    async def ListRedrives(self, request, context):  # type: ignore[no-untyped-def]
        queue = names.parse_queue(request.parent, "parent")
        scope = _scope("redrives", queue)
        offset = (
            validation.int_cursor(self._tokens.decode(scope, request.page_token), "offset") or 0
        )
        size = self._page_size(request.page_size)
        redrives = await self._engine.redrive_list(queue, offset, size + 1)
        page, token = self._tokens.next_page(
            redrives, size, scope, lambda _: {"offset": offset + size}
        )
        return rpc.ListRedrivesResponse(
            redrives=[convert.redrive_to_pb(r) for r in page],
            next_page_token=token,
        )


def _item_status(result: object) -> types_pb2.ItemStatus:
    if isinstance(result, Exception):
        code = getattr(result, "code", grpc.StatusCode.INTERNAL)
        return types_pb2.ItemStatus(code=code.value[0], message=str(result))
    return types_pb2.ItemStatus(code=0)
