"""Authentication and authorization over real gRPC: the queue and the event store on a
Platform with a principals file, on both backends (the suite-wide `core` fixture)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from conveyor.events.v1 import messages_pb2 as events_pb
from conveyor.events.v1 import service_pb2 as events_rpc
from conveyor.events.v1 import service_pb2_grpc as events_grpc
from conveyor.queue.v1 import service_pb2 as rpc
from conveyor.queue.v1 import service_pb2_grpc
from conveyor_core.grpc import create_channel, rich_error_details
from conveyor_core.runtime import Platform
from conveyor_core.settings import ConfigurationError, CoreSettings
from tests.helpers.queue import spec
from tests.helpers.security import Principals

QUEUE = "namespaces/a/queues/jobs"


@dataclass
class Secured:
    address: str
    principals: Principals
    root: str  # admin in every namespace
    _channels: list[grpc.aio.Channel] = field(default_factory=list)

    def queue(self, token: str | None) -> service_pb2_grpc.WorkOrderQueueServiceStub:
        return service_pb2_grpc.WorkOrderQueueServiceStub(self._channel(token))

    def journal(self, token: str | None) -> events_grpc.JournalServiceStub:
        return events_grpc.JournalServiceStub(self._channel(token))

    def events(self, token: str | None) -> events_grpc.EventStoreServiceStub:
        return events_grpc.EventStoreServiceStub(self._channel(token))

    def _channel(self, token: str | None) -> grpc.aio.Channel:
        channel = create_channel(self.address, token=token)
        self._channels.append(channel)
        return channel

    async def count_orders(self, namespace: str = "a") -> int:
        reply = await self.queue(self.root).ListWorkOrders(
            rpc.ListWorkOrdersRequest(parent=f"namespaces/{namespace}/queues/-", page_size=1000)
        )
        return len(reply.work_orders)


@pytest.fixture
async def secured(core: CoreSettings, tmp_path: Path) -> AsyncIterator[Secured]:
    principals = Principals(tmp_path / "principals.json")
    root = principals.add("root", ["*"], ["admin"])
    settings = core.model_copy(
        update={"auth_tokens_file": str(principals.path), "auth_reload_seconds": 0.05}
    )
    platform = Platform(settings, ["queue", "events"])
    port = await platform.start("127.0.0.1:0")
    env = Secured(f"127.0.0.1:{port}", principals, root)
    try:
        yield env
    finally:
        for channel in env._channels:
            await channel.close()
        await platform.stop(grace=0)


def submit_request(parent: str = QUEUE) -> rpc.SubmitWorkOrderRequest:
    return rpc.SubmitWorkOrderRequest(parent=parent, work_order=spec())


async def refused(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call  # type: ignore[misc]
    return raised.value


async def test_a_call_without_a_token_is_unauthenticated(secured: Secured) -> None:
    error = await refused(secured.queue(None).SubmitWorkOrder(submit_request()))
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED
    details = rich_error_details(error)
    assert details.reason == "UNAUTHENTICATED" and details.correlation_id
    assert "authorization: Bearer" in details.message
    assert await secured.count_orders() == 0


@pytest.mark.parametrize("token", ["cvy_not-a-known-token", "Basic dXNlcjpwYXNz"])
async def test_unknown_or_malformed_credentials_are_unauthenticated(
    secured: Secured, token: str
) -> None:
    stub = secured.queue(None)
    metadata = (("authorization", token if token.startswith("Basic") else f"Bearer {token}"),)
    error = await refused(stub.SubmitWorkOrder(submit_request(), metadata=metadata))
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_health_and_reflection_need_no_token(secured: Secured) -> None:
    channel = secured._channel(None)
    health = health_pb2_grpc.HealthStub(channel)
    reply = await health.Check(
        health_pb2.HealthCheckRequest(service="conveyor.queue.v1.WorkOrderQueueService")
    )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    async for response in responses:
        names = {s.name for s in response.list_services_response.service}
        assert "conveyor.queue.v1.WorkOrderQueueService" in names
        break


async def test_a_role_the_caller_lacks_is_permission_denied_and_changes_nothing(
    secured: Secured,
) -> None:
    viewer = secured.principals.add("dashboard", ["a"], ["viewer"])
    stats = await secured.queue(viewer).GetQueueStats(rpc.GetQueueStatsRequest(name=QUEUE))
    assert stats.stats.queue == QUEUE

    error = await refused(secured.queue(viewer).SubmitWorkOrder(submit_request()))
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED
    details = rich_error_details(error)
    assert details.reason == "PERMISSION_DENIED"
    assert dict(details.info) == {"principal": "dashboard", "required_role": "submitter"}
    error = await refused(secured.queue(viewer).PauseQueue(rpc.PauseQueueRequest(name=QUEUE)))
    assert dict(rich_error_details(error).info)["required_role"] == "operator"
    assert await secured.count_orders() == 0


async def test_a_namespace_outside_the_token_is_permission_denied(secured: Secured) -> None:
    app = secured.principals.add("app", ["a"], ["submitter", "viewer"])
    queue = secured.queue(app)
    await queue.SubmitWorkOrder(submit_request())
    error = await refused(queue.SubmitWorkOrder(submit_request("namespaces/b/queues/jobs")))
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED
    assert dict(rich_error_details(error).info) == {"principal": "app", "namespace": "b"}

    # One foreign item refuses the whole batch: nothing lands in either namespace.
    batch = rpc.BatchSubmitWorkOrdersRequest(
        parent=QUEUE,
        requests=[
            rpc.SubmitWorkOrderRequest(work_order=spec()),
            rpc.SubmitWorkOrderRequest(parent="namespaces/b/queues/jobs", work_order=spec()),
        ],
    )
    error = await refused(queue.BatchSubmitWorkOrders(batch))
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED
    assert await secured.count_orders("a") == 1
    assert await secured.count_orders("b") == 0

    # Reading another namespace's order by name is refused too.
    other = await secured.queue(secured.root).SubmitWorkOrder(
        submit_request("namespaces/b/queues/jobs")
    )
    error = await refused(queue.GetWorkOrder(rpc.GetWorkOrderRequest(name=other.work_order.name)))
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED


async def test_a_request_that_does_not_name_a_namespace_is_invalid(secured: Secured) -> None:
    app = secured.principals.add("app", ["a"], ["submitter"])
    error = await refused(secured.queue(app).SubmitWorkOrder(submit_request("queues/jobs")))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert rich_error_details(error).field_violations[0][0] == "parent"


async def test_the_journal_is_read_only_in_the_namespaces_of_the_token(secured: Secured) -> None:
    app = secured.principals.add("auditor", ["a"], ["viewer"])
    journal = secured.journal(app)
    reply = await journal.ReadJournal(
        events_rpc.ReadJournalRequest(filter=events_rpc.JournalFilter(namespace="a"))
    )
    assert list(reply.records) == []
    error = await refused(journal.ReadJournal(events_rpc.ReadJournalRequest()))
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "name one" in error.details()

    stream = journal.SubscribeJournal(
        events_rpc.SubscribeJournalRequest(filter=events_rpc.JournalFilter(namespace="b"))
    )
    error = await refused(stream.read())
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED


async def test_only_the_system_role_appends_to_the_journal(secured: Secured) -> None:
    writer = secured.principals.add("app", ["a"], ["submitter", "worker", "operator"])
    record = events_pb.JournalRecord(
        id="forged-1",
        type="queue.work_order.succeeded",
        namespace="a",
        subjects={"work_order": "w-1"},
        time=Timestamp(seconds=int(time.time())),
    )
    append = events_rpc.AppendJournalRecordsRequest(records=[record])
    error = await refused(secured.journal(writer).AppendJournalRecords(append))
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED
    assert dict(rich_error_details(error).info)["required_role"] == "system"
    relay = secured.principals.add("relay", ["*"], ["system"])
    await secured.journal(relay).AppendJournalRecords(append)


async def test_a_skip_records_the_authenticated_caller(secured: Secured) -> None:
    ops = secured.principals.add("ops-oncall", ["a"], ["operator", "submitter", "viewer"])
    events = secured.events(ops)
    topic = "namespaces/a/topics/orders"
    await events.CreateTopic(
        events_rpc.CreateTopicRequest(parent="namespaces/a", topic_id="orders")
    )
    published = await events.PublishEvents(
        events_rpc.PublishEventsRequest(
            parent=topic, events=[events_pb.EventDraft(message_id="m1", title="order 1")]
        )
    )
    skipped = await events.SkipEvent(
        events_rpc.SkipEventRequest(
            name=published.events[0].name, skipped_by="alice", reason="duplicate order"
        )
    )
    assert skipped.event.skipped_by == "ops-oncall (on behalf of alice)"


async def test_a_revoked_token_stops_working_without_a_restart(secured: Secured) -> None:
    app = secured.principals.add("app", ["a"], ["viewer"])
    queue = secured.queue(app)
    await queue.GetQueueStats(rpc.GetQueueStatsRequest(name=QUEUE))
    secured.principals.remove("app")
    deadline = time.monotonic() + 10
    while True:
        try:
            await queue.GetQueueStats(rpc.GetQueueStatsRequest(name=QUEUE))
        except grpc.aio.AioRpcError as error:
            assert error.code() is grpc.StatusCode.UNAUTHENTICATED
            break
        assert time.monotonic() < deadline, "the revoked token still works after 10 s"
        await asyncio.sleep(0.05)


async def test_an_invalid_principals_file_stops_the_start(tmp_path: Path) -> None:
    path = tmp_path / "principals.json"
    path.write_text('{"principals": [{"name": "x", "namespaces": ["a"], "roles": ["god"]}]}')
    settings = CoreSettings(data_dir=tmp_path, auth_tokens_file=str(path))
    platform = Platform(settings, ["queue"])
    with pytest.raises(ConfigurationError) as raised:
        await platform.start("127.0.0.1:0")
    assert "CONVEYOR_AUTH_TOKENS_FILE" in str(raised.value)
    assert "unknown role 'god'" in str(raised.value)
