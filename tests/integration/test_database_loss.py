"""A service whose database goes away answers UNAVAILABLE (retry), not a masked INTERNAL,
and recovers on its own when the database is back: the event store, whose statements go
through SQLAlchemy, reaching PostgreSQL through a real TCP proxy that the test stops."""

from __future__ import annotations

import grpc
import pytest

from conveyor.events.v1 import service_pb2 as rpc
from conveyor.events.v1 import service_pb2_grpc
from conveyor_core.grpc import create_channel, rich_error_details
from conveyor_core.runtime import Platform
from conveyor_core.settings import CoreSettings
from tests.helpers.tcp_proxy import BlackholeProxy, through_proxy

TOPIC = "namespaces/a/topics/orders"


async def test_a_lost_database_is_unavailable_until_it_returns(
    postgres_core: CoreSettings, postgres_proxy: BlackholeProxy
) -> None:
    proxy = postgres_proxy
    core = postgres_core.model_copy(
        update={"database_url": through_proxy(postgres_core.database_url, proxy), "db_pool_size": 2}
    )
    platform = Platform(core, ["events"])
    port = await platform.start("127.0.0.1:0")
    try:
        async with create_channel(f"127.0.0.1:{port}") as channel:
            stub = service_pb2_grpc.EventStoreServiceStub(channel)
            await stub.CreateTopic(rpc.CreateTopicRequest(parent="namespaces/a", topic_id="orders"))

            await proxy.stop()  # every pooled connection drops; new ones are refused
            for _ in range(3):  # the pooled connections' last calls, then refused connects
                with pytest.raises(grpc.aio.AioRpcError) as raised:
                    await stub.GetTopic(rpc.GetTopicRequest(name=TOPIC), timeout=10)
                assert raised.value.code() is grpc.StatusCode.UNAVAILABLE
                details = rich_error_details(raised.value)
                assert details.reason == "DATABASE_UNAVAILABLE" and details.correlation_id

            await proxy.start(proxy.port)  # the database is back
            reply = await stub.GetTopic(rpc.GetTopicRequest(name=TOPIC), timeout=10)
            assert reply.topic.name == TOPIC
    finally:
        await platform.stop(grace=0)
