"""gRPC servicer of WorkOrderQueueService: validate, translate, call the engine, translate back.

Domain errors propagate to the error interceptor, which maps them to gRPC
status with rich details; nothing here builds a status by hand.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta

import grpc

from conveyor.common.v1 import types_pb2
from conveyor.queue.v1 import service_pb2 as rpc
from conveyor.queue.v1 import service_pb2_grpc
from conveyor_core.auth import actor
from conveyor_core.errors import FieldViolation, InvalidArgument
from conveyor_core.pagination import PageTokens, page_size
from conveyor_core.validators import string_problem
from conveyor_queue.api import convert
from conveyor_queue.domain import validation as names
from conveyor_queue.domain.model import QueueConfig, QueueRef
from conveyor_queue.engine import LeaseRequest, QueueEngine, SubmitItem
from conveyor_queue.settings import QueueSettings
from conveyor_queue.store.base import CompleteParams, FailParams, ListParams, RedriveParams

# The redrives table's requested_by column holds 256 characters.
MAX_ACTOR_LENGTH = 256
#: The work orders table's leased_by column (the lease's worker_identity) holds 256 characters.
MAX_WORKER_IDENTITY_LENGTH = 256
SERVICE_NAME = rpc.DESCRIPTOR.services_by_name["WorkOrderQueueService"].full_name
QUEUE_FIELDS = frozenset(
    {"paused", "max_in_flight", "max_in_flight_per_key", "fair", "rate_limit", "rate_limit_per_key"}
)


def _scope(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def _positive_duration(message, field: str, maximum: float) -> timedelta | None:  # type: ignore[no-untyped-def]
    value = convert.opt_dur(message, field)
    if value is not None and not timedelta(0) <= value <= timedelta(seconds=maximum):
        raise InvalidArgument(FieldViolation(field, f"must be in [0, {maximum}] seconds"))
    return value


class WorkOrderQueueServicer(service_pb2_grpc.WorkOrderQueueServiceServicer):
    def __init__(self, engine: QueueEngine, page_tokens: PageTokens) -> None:
        self._engine = engine
        self._tokens = page_tokens

    @property
    def _settings(self) -> QueueSettings:
        return self._engine.settings

    async def SubmitWorkOrder(self, request, context):  # type: ignore[no-untyped-def]
        queue = names.parse_queue(request.parent, "parent")
        for field in ("traceparent", "correlation_id"):  # the call's metadata carries them
            if getattr(request, field):
                raise InvalidArgument(FieldViolation(field, "only for BatchSubmitWorkOrders items"))
        [result] = await self._engine.submit(
            [SubmitItem(queue, convert.spec_from_pb(request.work_order))]
        )
        return rpc.SubmitWorkOrderResponse(
            work_order=convert.order_to_pb(result.work_order), already_exists=result.already_exists
        )

    async def BatchSubmitWorkOrders(self, request, context):  # type: ignore[no-untyped-def]
        default = names.parse_queue(request.parent, "parent")
        if not request.requests:
            raise InvalidArgument(FieldViolation("requests", "at least one submit"))
        items = []
        for i, item in enumerate(request.requests):
            queue = (
                names.parse_queue(item.parent, f"requests[{i}].parent") if item.parent else default
            )
            if queue.namespace != default.namespace:
                raise InvalidArgument(
                    FieldViolation(f"requests[{i}].parent", "must be in the namespace of parent")
                )
            items.append(
                SubmitItem(
                    queue,
                    convert.spec_from_pb(item.work_order, f"requests[{i}].work_order."),
                    f"requests[{i}].",
                    item.traceparent,
                    item.correlation_id,
                )
            )
        results = await self._engine.submit(items)
        return rpc.BatchSubmitWorkOrdersResponse(
            responses=[
                rpc.SubmitWorkOrderResponse(
                    work_order=convert.order_to_pb(r.work_order), already_exists=r.already_exists
                )
                for r in results
            ]
        )

    async def LeaseWorkOrders(self, request, context):  # type: ignore[no-untyped-def]
        s = self._settings
        namespace = names.parse_namespace(request.parent, "parent")
        violations = []
        if not request.queues:
            violations.append(FieldViolation("queues", "name at least one queue"))
        if len(request.queues) > s.max_lease_queues:
            violations.append(FieldViolation("queues", f"at most {s.max_lease_queues} queues"))
        if not 1 <= request.max_work_orders <= s.max_lease_batch:
            violations.append(
                FieldViolation("max_work_orders", f"must be in [1, {s.max_lease_batch}]")
            )
        worker = string_problem(
            request.worker_identity, "worker_identity", MAX_WORKER_IDENTITY_LENGTH
        )
        if worker is not None:  # stored as leased_by (PostgreSQL refused it: INTERNAL)
            violations.append(worker)
        if violations:
            raise InvalidArgument(violations)
        queues = tuple(
            dict.fromkeys(
                names.check_queue_id(q, f"queues[{i}]") for i, q in enumerate(request.queues)
            )
        )
        wait = _positive_duration(request, "wait_time", s.max_wait_seconds) or timedelta(0)
        lease = _positive_duration(request, "lease_duration", s.max_lease_seconds)
        if lease is not None and lease <= timedelta(0):
            raise InvalidArgument(FieldViolation("lease_duration", "must be positive"))
        leased = await self._engine.lease(
            LeaseRequest(
                namespace,
                queues,
                request.max_work_orders,
                wait,
                lease,
                request.worker_identity or context.peer(),
            )
        )
        return rpc.LeaseWorkOrdersResponse(
            work_orders=[
                rpc.LeasedWorkOrder(
                    work_order=convert.order_to_pb(lw.work_order), lease_token=lw.lease_token
                )
                for lw in leased
            ]
        )

    async def HeartbeatWorkOrder(self, request, context):  # type: ignore[no-untyped-def]
        ref = names.parse_work_order(request.name, "name")
        lease = _positive_duration(request, "lease_duration", self._settings.max_lease_seconds)
        progress = (
            convert.progress_from_pb(request.progress) if request.HasField("progress") else None
        )
        if progress is not None and not 0 <= progress.percent <= 100:
            raise InvalidArgument(FieldViolation("progress.percent", "must be in [0, 100]"))
        order = await self._engine.heartbeat(ref, _token(request.lease_token), lease, progress)
        return rpc.HeartbeatWorkOrderResponse(
            lease_expire_time=convert.ts(order.lease_expires_at),
            cancel_requested=order.cancel_requested,
        )

    async def CompleteWorkOrder(self, request, context):  # type: ignore[no-untyped-def]
        [result] = await self._engine.complete([_complete_params(request, "")])
        if isinstance(result, Exception):
            raise result
        return rpc.CompleteWorkOrderResponse(work_order=convert.order_to_pb(result))

    async def BatchCompleteWorkOrders(self, request, context):  # type: ignore[no-untyped-def]
        namespace = names.parse_namespace(request.parent, "parent")
        items = [
            _complete_params(item, f"requests[{i}].") for i, item in enumerate(request.requests)
        ]
        for i, item in enumerate(items):
            if item.ref.namespace != namespace:
                raise InvalidArgument(
                    FieldViolation(f"requests[{i}].name", "must be in the namespace of parent")
                )
        results = await self._engine.complete(items, brief=True)
        return rpc.BatchCompleteWorkOrdersResponse(statuses=[_item_status(r) for r in results])

    async def FailWorkOrder(self, request, context):  # type: ignore[no-untyped-def]
        ref = names.parse_work_order(request.name, "name")
        if not request.failure.type:
            raise InvalidArgument(FieldViolation("failure.type", "required: classify the failure"))
        if len(request.failure.message) > self._settings.max_failure_message_length:
            raise InvalidArgument(
                FieldViolation(
                    "failure.message", f"longer than {self._settings.max_failure_message_length}"
                )
            )
        delay = _positive_duration(
            request, "retry_delay", self._settings.max_retry_interval_seconds
        )
        order = await self._engine.fail(
            FailParams(
                ref,
                _token(request.lease_token),
                convert.failure_from_pb(request.failure),
                delay,
                self._engine.clock.now(),
            )
        )
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
        states = tuple(
            convert.STATE_FROM_PB[s] for s in request.states if s in convert.STATE_FROM_PB
        )
        if len(states) != len(request.states):
            raise InvalidArgument(FieldViolation("states", "contains an unknown state"))
        newest = request.order == 2
        scope = _scope("orders", queue, states, request.concurrency_key, request.error_type, newest)
        cursor = self._tokens.decode(scope, request.page_token)
        size = page_size(
            request.page_size, self._settings.default_page_size, self._settings.max_page_size
        )
        rows = await self._engine.list(
            ListParams(
                queue,
                states,
                request.concurrency_key or None,
                request.error_type or None,
                _int_cursor(cursor, "seq"),
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
        after = _int_cursor(self._tokens.decode(scope, request.page_token), "seq") or 0
        size = page_size(
            request.page_size, self._settings.default_page_size, self._settings.max_page_size
        )
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
            estimated_start_time=convert.ts(position.estimated_start),
            dispatch_rate_per_second=position.dispatch_rate_per_second,
        )

    async def GetQueue(self, request, context):  # type: ignore[no-untyped-def]
        config = await self._engine.queue_get(names.parse_queue(request.name, "name"))
        return rpc.GetQueueResponse(queue=convert.queue_to_pb(config))

    async def ListQueues(self, request, context):  # type: ignore[no-untyped-def]
        namespace = names.parse_namespace(request.parent, "parent")
        scope = _scope("queues", namespace)
        cursor = self._tokens.decode(scope, request.page_token) or {}
        size = page_size(
            request.page_size, self._settings.default_page_size, self._settings.max_page_size
        )
        configs = await self._engine.queue_list(namespace, str(cursor.get("after", "")), size + 1)
        page, token = self._tokens.next_page(configs, size, scope, lambda c: {"after": c.queue})
        return rpc.ListQueuesResponse(
            queues=[convert.queue_to_pb(c) for c in page],
            next_page_token=token,
        )

    async def UpdateQueue(self, request, context):  # type: ignore[no-untyped-def]
        ref = names.parse_queue(request.queue.name, "queue.name")
        fields = frozenset(request.update_mask.paths) or QUEUE_FIELDS
        unknown = sorted(fields - QUEUE_FIELDS)
        if unknown:
            raise InvalidArgument(
                FieldViolation("update_mask", f"unknown or read-only fields: {unknown}")
            )
        config = _queue_from_pb(ref, request.queue)
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
        queue = names.parse_queue(request.parent, "parent")
        violations = []
        if not request.reason.strip():
            violations.append(FieldViolation("reason", "required: say why the orders are redriven"))
        requested_by = actor(request.requested_by)  # the caller's identity when authenticated
        if not requested_by:
            violations.append(FieldViolation("requested_by", "required: who asks for the redrive"))
        elif len(requested_by) > MAX_ACTOR_LENGTH:
            violations.append(
                FieldViolation("requested_by", f"at most {MAX_ACTOR_LENGTH} characters")
            )
        if request.max_work_orders < 0:
            violations.append(FieldViolation("max_work_orders", "must not be negative"))
        if violations:
            raise InvalidArgument(violations)
        redrive = await self._engine.redrive(
            RedriveParams(
                queue,
                request.error_type,
                convert.opt_ts(request, "dead_after"),
                request.max_work_orders,
                request.reason,
                requested_by,
                request.request_id,
                self._settings.redrive_chunk_size,
                self._engine.clock.now(),
            )
        )
        return rpc.RedriveWorkOrdersResponse(redrive=convert.redrive_to_pb(redrive))

    async def ListRedrives(self, request, context):  # type: ignore[no-untyped-def]
        queue = names.parse_queue(request.parent, "parent")
        scope = _scope("redrives", queue)
        offset = _int_cursor(self._tokens.decode(scope, request.page_token), "offset") or 0
        size = page_size(
            request.page_size, self._settings.default_page_size, self._settings.max_page_size
        )
        redrives = await self._engine.redrive_list(queue, offset, size + 1)
        page, token = self._tokens.next_page(
            redrives, size, scope, lambda _: {"offset": offset + size}
        )
        return rpc.ListRedrivesResponse(
            redrives=[convert.redrive_to_pb(r) for r in page],
            next_page_token=token,
        )


def _token(value: str) -> str:
    if not value:
        raise InvalidArgument(FieldViolation("lease_token", "required: the token from the lease"))
    return value


def _complete_params(request: rpc.CompleteWorkOrderRequest, prefix: str) -> CompleteParams:
    ref = names.parse_work_order(request.name, f"{prefix}name")
    if not request.lease_token:
        raise InvalidArgument(FieldViolation(f"{prefix}lease_token", "required"))
    return CompleteParams(ref, request.lease_token, convert.payload_from_pb(request.result))


def _item_status(result: object) -> types_pb2.ItemStatus:
    if isinstance(result, Exception):
        code = getattr(result, "code", grpc.StatusCode.INTERNAL)
        return types_pb2.ItemStatus(code=code.value[0], message=str(result))
    return types_pb2.ItemStatus(code=0)


def _int_cursor(cursor: dict | None, key: str) -> int | None:
    if cursor is None:
        return None
    value = cursor.get(key)
    if not isinstance(value, int):
        raise InvalidArgument(FieldViolation("page_token", "is not a page token from this API"))
    return value


def _queue_from_pb(ref: QueueRef, message) -> QueueConfig:  # type: ignore[no-untyped-def]
    violations = []
    for field in ("max_in_flight", "max_in_flight_per_key"):
        if getattr(message, field) < 0:
            violations.append(FieldViolation(f"queue.{field}", "must not be negative"))
    for field in ("rate_limit", "rate_limit_per_key"):
        rate = getattr(message, field)
        if rate.tokens < 0 or rate.burst < 0:
            violations.append(
                FieldViolation(f"queue.{field}", "tokens and burst must not be negative")
            )
            continue
        # In protobuf's range first (2^62 s overflowed ToTimedelta: INTERNAL).
        period = convert.opt_dur(rate, "period", f"queue.{field}.period")
        if rate.tokens and (period is None or period <= timedelta(0)):
            violations.append(FieldViolation(f"queue.{field}.period", "must be positive"))
    if violations:
        raise InvalidArgument(violations)
    return QueueConfig(
        ref.namespace,
        ref.queue,
        paused=message.paused,
        max_in_flight=message.max_in_flight,
        max_in_flight_per_key=message.max_in_flight_per_key,
        fair=message.fair,
        rate_limit=convert.rate_from_pb(message.rate_limit),
        rate_limit_per_key=convert.rate_from_pb(message.rate_limit_per_key),
    )
