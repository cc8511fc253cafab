"""The workflow runtime's calls to the other services, through their contracts only.

The event store: reserve/release/commit and handler state. The queue: a
session's follow-up (or a resume after a person resolved a mutation) is a new
work order on the workflow's queue, keyed by the workflow so that the queue's
per-key limit keeps one session per workflow running.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from conveyor.common.v1 import job_pb2, types_pb2
from conveyor.events.v1 import messages_pb2 as events_pb
from conveyor.events.v1 import service_pb2 as events_rpc
from conveyor.events.v1 import service_pb2_grpc as events_grpc
from conveyor.queue.v1 import messages_pb2 as queue_pb
from conveyor.queue.v1 import service_pb2 as queue_rpc
from conveyor.queue.v1 import service_pb2_grpc as queue_grpc
from conveyor_core.grpc import create_channel
from conveyor_core.settings import CoreSettings
from conveyor_executor.domain.invocation import JOB_INVOCATION_CONTENT_TYPE
from conveyor_executor.domain.workflow import HeldEvent

_EVENTS = "conveyor.events.v1.EventStoreService"
JSON = "application/json"


def concurrency_key(workflow: str) -> str:
    """The queue's flow-control key of a workflow's sessions (one leased at a time)."""
    return f"workflow/{workflow}"


def state_name(namespace: str, workflow: str, handler: str) -> str:
    return f"namespaces/{namespace}/handlers/{workflow}.{handler.replace('_', '-')}/state"


def topic_name(namespace: str, topic: str) -> str:
    return f"namespaces/{namespace}/topics/{topic}"


def decode_payload(payload: types_pb2.Payload) -> Any:
    """An event's or state's JSON value; other content as text (bytes it cannot be: hex)."""
    if not payload.data:
        return None
    try:
        return json.loads(payload.data)
    except ValueError:
        try:
            return payload.data.decode()
        except UnicodeDecodeError:
            return payload.data.hex()


def held(event: events_pb.Event, topic: str) -> HeldEvent:
    return HeldEvent(
        topic, event.sequence, event.message_id, event.title, decode_payload(event.payload)
    )


@dataclass(frozen=True, slots=True)
class CommitOutcome:
    version: int
    published: int
    replayed: bool


class EventsPort:
    def __init__(self, address: str, core: CoreSettings, timeout: float) -> None:
        self.address = address
        self._channel = create_channel(address, settings=core, idempotent_methods=[_EVENTS])
        self._stub = events_grpc.EventStoreServiceStub(self._channel)
        self._timeout = timeout

    async def close(self) -> None:
        await self._channel.close()

    async def ensure_topic(self, namespace: str, topic: str, workflow: str) -> None:
        try:
            await self._stub.CreateTopic(
                events_rpc.CreateTopicRequest(
                    parent=f"namespaces/{namespace}",
                    topic_id=topic,
                    topic=events_pb.Topic(workflow=workflow),
                ),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise

    async def pending(self, namespace: str, topic: str) -> int:
        try:
            response = await self._stub.GetTopicStats(
                events_rpc.GetTopicStatsRequest(name=topic_name(namespace, topic)),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return 0
            raise
        return response.stats.pending

    async def state(self, name: str) -> tuple[int, Any]:
        response = await self._stub.GetState(
            events_rpc.GetStateRequest(name=name), timeout=self._timeout
        )
        return response.state.version, decode_payload(response.state.data)

    async def release(self, namespace: str, topic: str, run_id: str) -> int:
        response = await self._stub.ReleaseEvents(
            events_rpc.ReleaseEventsRequest(parent=topic_name(namespace, topic), run_id=run_id),
            timeout=self._timeout,
        )
        return response.released_count

    async def reserve(self, namespace: str, topic: str, run_id: str, count: int) -> list[HeldEvent]:
        response = await self._stub.ReserveEvents(
            events_rpc.ReserveEventsRequest(
                parent=topic_name(namespace, topic), run_id=run_id, max_events=count
            ),
            timeout=self._timeout,
        )
        return [held(e, topic) for e in response.events]

    async def commit(
        self,
        namespace: str,
        run_id: str,
        consume_topics: Sequence[str],
        events: Sequence[dict[str, Any]],
        state: tuple[str, int, bytes] | None,
    ) -> CommitOutcome:
        """Consume the run's reservations, publish `events`, store `state` (name, expected
        version, JSON bytes): one event-store transaction, idempotent per run id."""
        by_topic: dict[str, list[events_pb.EventDraft]] = {}
        for event in events:
            by_topic.setdefault(event["topic"], []).append(
                events_pb.EventDraft(
                    message_id=event["message_id"],
                    title=event["title"],
                    payload=types_pb2.Payload(data=event["payload"].encode(), content_type=JSON),
                )
            )
        request = events_rpc.CommitRequest(
            parent=f"namespaces/{namespace}",
            run_id=run_id,
            consume_topics=[topic_name(namespace, t) for t in consume_topics],
            publish=[
                events_rpc.TopicEvents(topic=topic_name(namespace, t), events=drafts)
                for t, drafts in by_topic.items()
            ],
        )
        if state is not None:
            name, expected, data = state
            request.state.CopyFrom(
                events_rpc.StateWrite(
                    name=name,
                    expected_version=expected,
                    data=types_pb2.Payload(data=data, content_type=JSON),
                )
            )
        response = await self._stub.Commit(request, timeout=self._timeout)
        return CommitOutcome(response.state.version, len(response.published), response.replayed)


class SessionSubmitter:
    """Starts a session of a workflow by submitting its work order to the queue."""

    def __init__(self, address: str, core: CoreSettings, timeout: float) -> None:
        self._channel = create_channel(
            address,
            settings=core,
            idempotent_methods=["conveyor.queue.v1.WorkOrderQueueService/SubmitWorkOrder"],
        )
        self._stub = queue_grpc.WorkOrderQueueServiceStub(self._channel)
        self._timeout = timeout

    async def close(self) -> None:
        await self._channel.close()

    async def submit(
        self, namespace: str, queue: str, workflow: str, idempotency_key: str, why: str
    ) -> str:
        """The new (or, for a repeated key, the existing) order's id."""
        invocation = job_pb2.JobInvocation(
            target=job_pb2.JobTarget(workflow=job_pb2.WorkflowTarget(workflow=workflow))
        )
        spec = queue_pb.WorkOrderSpec(
            payload=types_pb2.Payload(
                data=invocation.SerializeToString(), content_type=JOB_INVOCATION_CONTENT_TYPE
            ),
            idempotency_key=idempotency_key,
            concurrency_key=concurrency_key(workflow),
            labels={"workflow": workflow, "session_reason": why},
        )
        response = await self._stub.SubmitWorkOrder(
            queue_rpc.SubmitWorkOrderRequest(
                parent=f"namespaces/{namespace}/queues/{queue}", work_order=spec
            ),
            timeout=self._timeout,
        )
        return response.work_order.id
