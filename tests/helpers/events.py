"""Running the real event store for tests: a Platform on a real database, called over gRPC."""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import grpc
import pytest
from google.protobuf import duration_pb2

from conveyor.common.v1 import types_pb2
from conveyor.events.v1 import messages_pb2 as m
from conveyor.events.v1 import service_pb2 as rpc
from conveyor.events.v1 import service_pb2_grpc
from conveyor_core.clock import ManualClock
from conveyor_core.coordination import Coordination
from conveyor_core.grpc import RichError, create_channel, rich_error_details
from conveyor_core.runtime import Platform
from conveyor_core.settings import CoreSettings
from conveyor_events.service import EventStoreService
from conveyor_events.settings import EventStoreSettings

NAMESPACE = "test"
S = m.EventStatus


def namespace_name(namespace: str = NAMESPACE) -> str:
    return f"namespaces/{namespace}"


def topic_name(topic: str = "orders", namespace: str = NAMESPACE) -> str:
    return f"namespaces/{namespace}/topics/{topic}"


def state_name(handler: str = "handler", namespace: str = NAMESPACE) -> str:
    return f"namespaces/{namespace}/handlers/{handler}/state"


def draft(message_id: str, title: str | None = None, data: bytes = b"", **fields) -> m.EventDraft:  # type: ignore[no-untyped-def]
    return m.EventDraft(
        message_id=message_id,
        title=f"event {message_id}" if title is None else title,
        payload=types_pb2.Payload(data=data, content_type="text/plain"),
        **fields,
    )


def payload(data: bytes) -> types_pb2.Payload:
    return types_pb2.Payload(data=data, content_type="application/octet-stream")


def seconds(value: float) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromNanoseconds(int(value * 1e9))
    return out


async def rpc_error(call: Awaitable[object]) -> RichError:
    """The rich error of a call that must fail."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return rich_error_details(info.value)


@dataclass
class EventsEnv:
    """One running event store (real server, real database) and a client stub."""

    core: CoreSettings
    clock: ManualClock = field(default_factory=lambda: ManualClock(datetime.now(UTC)))
    settings: EventStoreSettings | None = None
    coordination: Coordination | None = None
    platform: Platform | None = None
    stub: service_pb2_grpc.EventStoreServiceStub = field(init=False)

    async def start(self) -> EventsEnv:
        # Hosted the way conveyor_core.runtime hosts any service, before "events" is in SERVICES.
        self.platform = Platform(self.core, [], coordination=self.coordination, clock=self.clock)
        self.platform.services.append(
            EventStoreService(
                self.core,
                self.platform.coordination,
                settings=self.settings or EventStoreSettings(),
                clock=self.clock,
            )
        )
        port = await self.platform.start("127.0.0.1:0")
        self._channel = create_channel(f"127.0.0.1:{port}")
        self.stub = service_pb2_grpc.EventStoreServiceStub(self._channel)
        return self

    async def stop(self) -> None:
        await self._channel.close()
        if self.platform is not None:
            await self.platform.stop(grace=0)

    @property
    def service(self) -> EventStoreService:
        assert self.platform is not None
        return self.platform.service("events")  # type: ignore[no-any-return]

    async def create_topic(self, topic: str = "orders", workflow: str = "") -> m.Topic:
        response = await self.stub.CreateTopic(
            rpc.CreateTopicRequest(
                parent=namespace_name(), topic_id=topic, topic=m.Topic(workflow=workflow)
            )
        )
        return response.topic

    async def publish(
        self, drafts: Sequence[m.EventDraft], topic: str = "orders"
    ) -> rpc.PublishEventsResponse:
        return await self.stub.PublishEvents(
            rpc.PublishEventsRequest(parent=topic_name(topic), events=list(drafts))
        )

    async def publish_n(self, n: int, topic: str = "orders", prefix: str = "m") -> list[m.Event]:
        response = await self.publish([draft(f"{prefix}{i}") for i in range(n)], topic)
        return list(response.events)

    async def reserve(self, run_id: str, n: int = 10, topic: str = "orders") -> list[m.Event]:
        response = await self.stub.ReserveEvents(
            rpc.ReserveEventsRequest(parent=topic_name(topic), run_id=run_id, max_events=n)
        )
        return list(response.events)

    async def events(self, topic: str = "orders", **fields) -> list[m.Event]:  # type: ignore[no-untyped-def]
        """Every event of the topic, oldest first (follows page tokens)."""
        out: list[m.Event] = []
        token = ""
        while True:
            page = await self.stub.ListEvents(
                rpc.ListEventsRequest(
                    parent=topic_name(topic), page_size=1000, page_token=token, **fields
                )
            )
            out += page.events
            token = page.next_page_token
            if not token:
                return out

    async def get_event(self, topic: str, sequence: int) -> m.Event:
        name = f"{topic_name(topic)}/events/{sequence}"
        return (await self.stub.GetEvent(rpc.GetEventRequest(name=name))).event

    async def stats(self, topic: str = "orders") -> m.TopicStats:
        response = await self.stub.GetTopicStats(rpc.GetTopicStatsRequest(name=topic_name(topic)))
        return response.stats

    async def state(self, handler: str = "handler") -> m.HandlerState:
        response = await self.stub.GetState(rpc.GetStateRequest(name=state_name(handler)))
        return response.state
