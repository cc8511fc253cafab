"""gRPC servicer of EventStoreService: validate, translate, call the engine, translate back.

Domain errors propagate to the error interceptor, which maps them to gRPC
status with rich details; nothing here builds a status by hand.
"""

from __future__ import annotations

import hashlib
from typing import Any

from conveyor.events.v1 import service_pb2 as rpc
from conveyor.events.v1 import service_pb2_grpc
from conveyor_core.auth import actor
from conveyor_core.clock import to_micros
from conveyor_core.errors import FieldViolation, InvalidArgument
from conveyor_core.pagination import PageTokens, page_size
from conveyor_events.api import convert
from conveyor_events.domain import validation as names
from conveyor_events.domain.model import StateWrite, Topic, TopicRef
from conveyor_events.engine import CommitRequest, EventStoreEngine
from conveyor_events.store.base import EventListParams, StaleCursor, TopicListParams

SERVICE_NAME = rpc.DESCRIPTOR.services_by_name["EventStoreService"].full_name
_NOT_A_TOKEN = "is not a page token from this API"


def _scope(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()


class EventStoreServicer(service_pb2_grpc.EventStoreServiceServicer):
    def __init__(self, engine: EventStoreEngine, page_tokens: PageTokens) -> None:
        self._engine = engine
        self._tokens = page_tokens

    def _page_size(self, requested: int) -> int:
        s = self._engine.settings
        return page_size(requested, s.default_page_size, s.max_page_size)

    # -- topics -------------------------------------------------------------------

    async def CreateTopic(self, request, context):  # type: ignore[no-untyped-def]
        namespace = names.parse_namespace(request.parent, "parent")
        topic_id = names.check_resource_id(request.topic_id, "topic_id", "topic")
        workflow = request.topic.workflow
        if workflow:
            names.check_resource_id(workflow, "topic.workflow", "workflow")
        topic = await self._engine.topic_create(
            Topic(namespace, topic_id, workflow, request.topic.description)
        )
        return rpc.CreateTopicResponse(topic=convert.topic_to_pb(topic))

    async def GetTopic(self, request, context):  # type: ignore[no-untyped-def]
        topic = await self._engine.topic_get(names.parse_topic(request.name, "name"))
        return rpc.GetTopicResponse(topic=convert.topic_to_pb(topic))

    async def ListTopics(self, request, context):  # type: ignore[no-untyped-def]
        namespace = names.parse_namespace(request.parent, "parent")
        workflow = request.workflow or None
        if workflow:
            names.check_resource_id(workflow, "workflow", "workflow")
        scope = _scope("topics", namespace, workflow)
        after = _cursor_value(self._tokens.decode(scope, request.page_token), "after", str) or ""
        size = self._page_size(request.page_size)
        found = await self._engine.topic_list(TopicListParams(namespace, workflow, after, size + 1))
        page, token = self._tokens.next_page(found, size, scope, lambda t: {"after": t.topic})
        return rpc.ListTopicsResponse(
            topics=[convert.topic_to_pb(t) for t in page],
            next_page_token=token,
        )

    async def GetTopicStats(self, request, context):  # type: ignore[no-untyped-def]
        stats = await self._engine.topic_stats(names.parse_topic(request.name, "name"))
        return rpc.GetTopicStatsResponse(stats=convert.stats_to_pb(stats))

    # -- publish and consumption ----------------------------------------------------

    async def PublishEvents(self, request, context):  # type: ignore[no-untyped-def]
        topic = names.parse_topic(request.parent, "parent")
        published = await self._engine.publish(
            topic, [convert.draft_from_pb(d) for d in request.events]
        )
        response = rpc.PublishEventsResponse(
            already_published=[p.already_published for p in published]
        )
        convert.add_events(response.events, (p.event for p in published))
        return response

    async def ReserveEvents(self, request, context):  # type: ignore[no-untyped-def]
        topic = names.parse_topic(request.parent, "parent")
        reserved = await self._engine.reserve(topic, request.run_id, request.max_events)
        response = rpc.ReserveEventsResponse()
        convert.add_events(response.events, reserved)
        return response

    async def ReleaseEvents(self, request, context):  # type: ignore[no-untyped-def]
        topic = names.parse_topic(request.parent, "parent")
        released = await self._engine.release(topic, request.run_id, list(request.sequences))
        return rpc.ReleaseEventsResponse(released_count=released)

    async def ConsumeEvents(self, request, context):  # type: ignore[no-untyped-def]
        topic = names.parse_topic(request.parent, "parent")
        consumed = await self._engine.consume(topic, request.run_id, list(request.sequences))
        return rpc.ConsumeEventsResponse(consumed_count=consumed)

    async def SkipEvent(self, request, context):  # type: ignore[no-untyped-def]
        ref = names.parse_event(request.name, "name")
        # With authentication on, the caller's identity is who skipped it.
        event = await self._engine.skip(ref, actor(request.skipped_by), request.reason)
        return rpc.SkipEventResponse(event=convert.event_to_pb(event))

    # -- browsing ---------------------------------------------------------------------

    async def ListEvents(self, request, context):  # type: ignore[no-untyped-def]
        topic = names.parse_topic(request.parent, "parent")
        statuses = tuple(
            sorted(
                {convert.STATUS_FROM_PB[s] for s in request.statuses if s in convert.STATUS_FROM_PB}
            )
        )
        if len(set(request.statuses)) != len(statuses):
            raise InvalidArgument(FieldViolation("statuses", "contains an unknown status"))
        if request.order not in (rpc.EVENT_ORDER_UNSPECIFIED, *_ORDERS):
            raise InvalidArgument(FieldViolation("order", "unknown order"))
        newest = request.order == rpc.EVENT_ORDER_NEWEST_FIRST
        scope = _scope("events", topic, statuses, newest)
        after = _cursor_value(self._tokens.decode(scope, request.page_token), "seq", int)
        size = self._page_size(request.page_size)
        found = await self._engine.event_list(
            EventListParams(topic, statuses, after, size + 1, newest)
        )
        page, token = self._tokens.next_page(found, size, scope, lambda e: {"seq": e.sequence})
        response = rpc.ListEventsResponse(next_page_token=token)
        convert.add_events(response.events, page)
        return response

    async def GetEvent(self, request, context):  # type: ignore[no-untyped-def]
        event = await self._engine.event_get(names.parse_event(request.name, "name"))
        return rpc.GetEventResponse(event=convert.event_to_pb(event))

    async def ListStaleEvents(self, request, context):  # type: ignore[no-untyped-def]
        namespace = names.parse_namespace(request.parent, "parent")
        older_than = request.older_than.ToTimedelta() if request.HasField("older_than") else None
        if older_than is not None and older_than.total_seconds() <= 0:
            raise InvalidArgument(FieldViolation("older_than", "must be positive"))
        scope = _scope("stale", namespace, older_than)
        after = _stale_cursor(self._tokens.decode(scope, request.page_token))
        size = self._page_size(request.page_size)
        found = await self._engine.stale_list(namespace, older_than, after, size + 1)
        page, token = self._tokens.next_page(
            found,
            size,
            scope,
            lambda e: {"at": to_micros(e.published_at), "topic": e.topic, "seq": e.sequence},
        )
        response = rpc.ListStaleEventsResponse(next_page_token=token)
        convert.add_events(response.events, page)
        return response

    # -- handler state and commits ------------------------------------------------------

    async def GetState(self, request, context):  # type: ignore[no-untyped-def]
        state = await self._engine.state_get(names.parse_handler_state(request.name, "name"))
        return rpc.GetStateResponse(state=convert.state_to_pb(state))

    async def CommitState(self, request, context):  # type: ignore[no-untyped-def]
        ref = names.parse_handler_state(request.name, "name")
        state = await self._engine.state_commit(
            StateWrite(ref, request.expected_version, convert.payload_from_pb(request.data))
        )
        return rpc.CommitStateResponse(state=convert.state_to_pb(state))

    async def Commit(self, request, context):  # type: ignore[no-untyped-def]
        namespace = names.parse_namespace(request.parent, "parent")
        consume = tuple(
            _topic_in(namespace, name, f"consume_topics[{i}]")
            for i, name in enumerate(request.consume_topics)
        )
        publish = tuple(
            (
                _topic_in(namespace, entry.topic, f"publish[{i}].topic"),
                tuple(convert.draft_from_pb(d) for d in entry.events),
            )
            for i, entry in enumerate(request.publish)
        )
        state = None
        if request.HasField("state"):
            ref = names.parse_handler_state(request.state.name, "state.name")
            if ref.namespace != namespace:
                raise InvalidArgument(FieldViolation("state.name", "must be in parent's namespace"))
            data = convert.payload_from_pb(request.state.data)
            state = StateWrite(ref, request.state.expected_version, data)
        result = await self._engine.commit(
            CommitRequest(namespace, request.run_id, consume, publish, state)
        )
        response = rpc.CommitResponse(
            consumed_count=result.consumed_count,
            state=convert.state_to_pb(result.state),
            replayed=result.replayed,
        )
        convert.add_events(response.published, result.published)
        return response


_ORDERS = (rpc.EVENT_ORDER_OLDEST_FIRST, rpc.EVENT_ORDER_NEWEST_FIRST)


def _topic_in(namespace: str, name: str, field: str) -> TopicRef:
    ref = names.parse_topic(name, field)
    if ref.namespace != namespace:
        raise InvalidArgument(FieldViolation(field, "must be in parent's namespace"))
    return ref


def _cursor_value(cursor: dict[str, Any] | None, key: str, kind: type) -> Any:
    if cursor is None:
        return None
    value = cursor.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise InvalidArgument(FieldViolation("page_token", _NOT_A_TOKEN))
    return value


def _stale_cursor(cursor: dict[str, Any] | None) -> StaleCursor | None:
    if cursor is None:
        return None
    return StaleCursor(
        _cursor_value(cursor, "at", int),
        _cursor_value(cursor, "topic", str),
        _cursor_value(cursor, "seq", int),
    )
