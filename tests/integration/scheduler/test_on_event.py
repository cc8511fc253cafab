"""On-event schedules fire when their topic has pending events, after the debounce."""

from __future__ import annotations

from datetime import UTC, timedelta

from conveyor.events.v1 import messages_pb2 as em
from conveyor.events.v1 import service_pb2 as erpc
from conveyor.events.v1 import service_pb2_grpc as egrpc
from conveyor.scheduler.v1 import messages_pb2 as pb
from tests.helpers.journal import eventually
from tests.helpers.scheduler import NAMESPACE, SchedulerEnv, seconds

TOPIC = f"namespaces/{NAMESPACE}/topics/orders"


async def test_pending_events_fire_the_schedule_after_the_debounce(env: SchedulerEnv) -> None:
    events = egrpc.EventStoreServiceStub(env._channel)
    await events.CreateTopic(
        erpc.CreateTopicRequest(parent=f"namespaces/{NAMESPACE}", topic_id="orders")
    )
    await env.create_job()
    schedule = await env.create_schedule(
        pb.Schedule(on_event=pb.EventSpec(topic=TOPIC, debounce=seconds(30))), "on-orders"
    )
    assert not schedule.HasField("next_fire_time")
    await events.PublishEvents(
        erpc.PublishEventsRequest(
            parent=TOPIC, events=[em.EventDraft(message_id="m1", title="order 1")]
        )
    )
    armed_at = env.clock.now()

    async def armed() -> bool:
        got = await env.stub.GetSchedule(_get(schedule.name))
        return got.schedule.HasField("next_fire_time")

    await eventually(armed)
    got = await env.stub.GetSchedule(_get(schedule.name))
    assert got.schedule.next_fire_time.ToDatetime(tzinfo=UTC) == armed_at + timedelta(seconds=30)
    assert not await env.fires(schedule.name)  # still debouncing
    env.clock.advance(30)

    async def fired() -> bool:
        fires = await env.fires(schedule.name)
        return any(f.outcome == pb.FIRE_OUTCOME_SUBMITTED for f in fires)

    await eventually(fired)
    assert len(await env.orders()) == 1


def _get(name: str):  # type: ignore[no-untyped-def]
    from conveyor.scheduler.v1 import service_pb2 as rpc

    return rpc.GetScheduleRequest(name=name)
