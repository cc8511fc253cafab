"""One bad order never stops the queue's passes: a retry policy that breaks backoff arithmetic
is refused at the edge, and a row planted in the database (bypassing validation) is failed with
its cause while the sweeper, FailWorkOrder and redrive go on with every other order."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2, timestamp_pb2
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from sqlalchemy import text

from conveyor.common.v1 import types_pb2
from conveyor.queue.v1 import messages_pb2 as m
from conveyor.queue.v1 import service_pb2 as rpc
from conveyor_core.grpc import rich_error_details
from tests.helpers.metrics import metric_value
from tests.helpers.queue import QueueEnv, queue_name, spec

S = m.WorkOrderState
POISONED = "conveyor.queue.poisoned_items"
#: A retry policy whose JSON lacks every field: no version of the queue reads it.
UNREADABLE_POLICY = '{"bogus": true}'


@pytest.mark.parametrize(
    ("policy", "field"),
    [
        (types_pb2.RetryPolicy(backoff_coefficient=float("nan")), "backoff_coefficient"),
        (types_pb2.RetryPolicy(backoff_coefficient=float("inf")), "backoff_coefficient"),
        (types_pb2.RetryPolicy(jitter=float("nan")), "jitter"),
        (
            types_pb2.RetryPolicy(initial_interval=duration_pb2.Duration(seconds=2**62)),
            "initial_interval",
        ),
        (
            types_pb2.RetryPolicy(maximum_interval=duration_pb2.Duration(seconds=10**11)),
            "maximum_interval",
        ),
    ],
)
async def test_a_retry_policy_that_breaks_backoff_is_refused(
    env: QueueEnv, policy: types_pb2.RetryPolicy, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await env.submit(retry_policy=policy)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    violations = dict(rich_error_details(info.value).field_violations)
    assert f"work_order.retry_policy.{field}" in violations, violations
    listed = await env.stub.ListWorkOrders(rpc.ListWorkOrdersRequest(parent=queue_name()))
    assert list(listed.work_orders) == []


async def _execute(env: QueueEnv, sql: str, **params: object) -> None:
    assert env.platform is not None
    async with env.platform.service("queue").engine_db.begin() as conn:
        await conn.execute(text(sql), params)


def _postgres(env: QueueEnv) -> bool:
    assert env.platform is not None
    return bool(env.platform.service("queue").engine_db.dialect.name == "postgresql")


def _stored_id(env: QueueEnv, order_id: str) -> str:
    """How the id column holds `order_id` (SQLite: 32 hex digits)."""
    return order_id if _postgres(env) else uuid.UUID(order_id).hex


async def _plant_policy(env: QueueEnv, order: m.WorkOrder, policy: str) -> None:
    await _execute(
        env,
        "UPDATE queue_work_orders SET retry_policy = :p WHERE id = :id",
        p=policy,
        id=_stored_id(env, order.id),
    )


async def _leased_pair(env: QueueEnv) -> tuple[rpc.LeasedWorkOrder, rpc.LeasedWorkOrder]:
    policy = types_pb2.RetryPolicy(maximum_attempts=5, jitter=0)
    await env.submit_many([spec(retry_policy=policy), spec(retry_policy=policy)])
    good, bad = await env.lease(n=2, lease=5)
    return good, bad


async def _nan_policy(env: QueueEnv) -> str:
    """The stored JSON of a NaN coefficient (SQLite's JSON1 keeps NaN; PostgreSQL cannot)."""
    if _postgres(env):
        pytest.skip("PostgreSQL's json type cannot hold NaN: no such row can exist there")
    return (
        '{"initial_us": 1000000, "coefficient": NaN, "max_us": 100000000, "jitter": 0.0, '
        '"max_attempts": 5, "non_retryable": []}'
    )


async def test_expired_leases_of_a_nan_coefficient_order_and_others_are_swept(
    env: QueueEnv,
) -> None:
    good, bad = await _leased_pair(env)
    await _plant_policy(env, bad.work_order, await _nan_policy(env))
    env.clock.advance(6)
    await env.sweep()
    assert (await env.get(good.work_order.name)).state == S.WORK_ORDER_STATE_QUEUED
    swept = await env.get(bad.work_order.name)
    assert swept.state == S.WORK_ORDER_STATE_QUEUED  # the longest delay its policy allows
    assert swept.last_timeout_kind == m.TIMEOUT_KIND_LEASE_EXPIRED


async def test_fail_of_a_nan_coefficient_order_answers(env: QueueEnv) -> None:
    _, bad = await _leased_pair(env)
    await _plant_policy(env, bad.work_order, await _nan_policy(env))
    failed = await env.fail(bad)
    assert failed.state == S.WORK_ORDER_STATE_QUEUED


async def test_an_unreadable_leased_order_is_failed_with_its_cause_and_the_others_swept(
    env: QueueEnv, metric_reader: InMemoryMetricReader, caplog: pytest.LogCaptureFixture
) -> None:
    before = metric_value(metric_reader, POISONED, {"loop": "lease_sweeper"})
    good, bad = await _leased_pair(env)
    await _plant_policy(env, bad.work_order, UNREADABLE_POLICY)
    env.clock.advance(6)
    with caplog.at_level(logging.ERROR, logger="conveyor_core.poison"):
        await env.sweep()
    assert (await env.get(good.work_order.name)).state == S.WORK_ORDER_STATE_QUEUED
    events = await env.stub.ListWorkOrderEvents(
        rpc.ListWorkOrderEventsRequest(parent=bad.work_order.name)
    )
    last = events.events[-1]
    assert last.to_state == S.WORK_ORDER_STATE_FAILED
    assert last.failure.type == "poisoned" and "KeyError" in last.failure.message
    assert metric_value(metric_reader, POISONED, {"loop": "lease_sweeper"}) == before + 1
    assert any(bad.work_order.id in r.getMessage() for r in caplog.records)
    # The quarantine left the row readable, keeping what it replaced.
    got = await env.get(bad.work_order.name)
    assert got.state == S.WORK_ORDER_STATE_FAILED
    assert got.last_failure.details["stored_retry_policy"] == UNREADABLE_POLICY
    assert got.last_failure.details["loop"] == "lease_sweeper"
    # FailWorkOrder on it now answers FAILED_PRECONDITION (its lease is gone), not INTERNAL.
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await env.fail(bad)
    assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION


async def test_an_unreadable_order_past_its_deadline_is_failed_and_the_others_expire(
    env: QueueEnv, metric_reader: InMemoryMetricReader
) -> None:
    before = metric_value(metric_reader, POISONED, {"loop": "deadline_sweeper"})
    deadline = timestamp_pb2.Timestamp()
    deadline.FromDatetime(env.clock.now() + timedelta(seconds=5))
    good, bad = await env.submit_many([spec(deadline=deadline), spec(deadline=deadline)])
    await _plant_policy(env, bad, UNREADABLE_POLICY)
    env.clock.advance(6)
    await env.sweep()
    expired = await env.get(good.name)
    assert expired.state == S.WORK_ORDER_STATE_FAILED
    assert expired.last_timeout_kind == m.TIMEOUT_KIND_SCHEDULE_TO_START
    quarantined = await env.get(bad.name)
    assert quarantined.state == S.WORK_ORDER_STATE_FAILED
    assert quarantined.last_failure.type == "poisoned"
    assert metric_value(metric_reader, POISONED, {"loop": "deadline_sweeper"}) == before + 1


async def test_fail_of_an_unreadable_order_quarantines_it_instead_of_internal(
    env: QueueEnv, metric_reader: InMemoryMetricReader
) -> None:
    before = metric_value(metric_reader, POISONED, {"loop": "fail"})
    good, bad = await _leased_pair(env)
    await _plant_policy(env, bad.work_order, UNREADABLE_POLICY)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await env.fail(bad)
    assert info.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "quarantined" in (info.value.details() or "")
    assert metric_value(metric_reader, POISONED, {"loop": "fail"}) == before + 1
    assert (await env.fail(good)).state == S.WORK_ORDER_STATE_QUEUED


async def test_a_row_the_database_refuses_to_update_is_isolated_from_the_batch(
    env: QueueEnv,
) -> None:
    """The batch's writes fail: the sweeper falls back to one transaction per order."""
    good, bad = await _leased_pair(env)
    await _refuse_requeue_of(env, bad.work_order.id)
    env.clock.advance(6)
    await env.sweep()
    assert (await env.get(good.work_order.name)).state == S.WORK_ORDER_STATE_QUEUED
    assert (await env.get(bad.work_order.name)).state == S.WORK_ORDER_STATE_FAILED


async def _refuse_requeue_of(env: QueueEnv, order_id: str) -> None:
    """A trigger refusing to move `order_id` back to QUEUED (as a broken row would)."""
    if _postgres(env):
        await _execute(
            env,
            "CREATE FUNCTION refuse_requeue() RETURNS trigger AS $$ BEGIN "
            f"IF NEW.id = '{order_id}' AND NEW.state = 'QUEUED' THEN RAISE EXCEPTION 'poisoned' "
            "USING ERRCODE = 'check_violation'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql",
        )
        await _execute(
            env,
            "CREATE TRIGGER refuse_requeue BEFORE UPDATE ON queue_work_orders "
            "FOR EACH ROW EXECUTE FUNCTION refuse_requeue()",
        )
    else:
        await _execute(
            env,
            "CREATE TRIGGER refuse_requeue BEFORE UPDATE ON queue_work_orders "
            f"WHEN NEW.id = '{_stored_id(env, order_id)}' AND NEW.state = 'QUEUED' "
            "BEGIN SELECT RAISE(ABORT, 'poisoned'); END",
        )


async def test_an_undecodable_json_column_is_quarantined_and_the_others_swept(
    env: QueueEnv, metric_reader: InMemoryMetricReader
) -> None:
    """SQLite keeps any text in a JSON column: the row fails as it is fetched."""
    if _postgres(env):
        pytest.skip("PostgreSQL's json type refuses text that is not JSON")
    before = metric_value(metric_reader, POISONED, {"loop": "lease_sweeper"})
    good, bad = await _leased_pair(env)
    await _plant_policy(env, bad.work_order, "not json at all")
    env.clock.advance(6)
    await env.sweep()
    assert (await env.get(good.work_order.name)).state == S.WORK_ORDER_STATE_QUEUED
    got = await env.get(bad.work_order.name)
    assert got.state == S.WORK_ORDER_STATE_FAILED
    assert "JSONDecodeError" in got.last_failure.message
    assert got.last_failure.details["stored_retry_policy"] == "not json at all"
    assert metric_value(metric_reader, POISONED, {"loop": "lease_sweeper"}) == before + 1


async def test_redrive_quarantines_an_unreadable_dead_order_and_redrives_the_others(
    env: QueueEnv, metric_reader: InMemoryMetricReader
) -> None:
    before = metric_value(metric_reader, POISONED, {"loop": "redrive"})
    policy = types_pb2.RetryPolicy(maximum_attempts=1)
    await env.submit_many([spec(retry_policy=policy) for _ in range(3)])
    leased = await env.lease(n=3)
    dead = [await env.fail(order) for order in leased]
    assert {o.state for o in dead} == {S.WORK_ORDER_STATE_DEAD}
    await _plant_policy(env, dead[1], UNREADABLE_POLICY)
    redrive = await env.stub.RedriveWorkOrders(
        rpc.RedriveWorkOrdersRequest(parent=queue_name(), reason="test", requested_by="me")
    )
    assert redrive.redrive.redriven_count == 2
    states = [(await env.get(o.name)).state for o in dead]
    assert states == [
        S.WORK_ORDER_STATE_QUEUED,
        S.WORK_ORDER_STATE_FAILED,
        S.WORK_ORDER_STATE_QUEUED,
    ]
    assert (await env.get(dead[1].name)).last_failure.details["loop"] == "redrive"
    assert metric_value(metric_reader, POISONED, {"loop": "redrive"}) == before + 1


@pytest.mark.parametrize("flow_controlled", [False, True], ids=["plain", "flow_controlled"])
@pytest.mark.parametrize("stored", [UNREADABLE_POLICY, "not json at all"], ids=["keys", "text"])
async def test_a_poisoned_queued_order_is_quarantined_and_the_others_leased(
    env: QueueEnv, metric_reader: InMemoryMetricReader, stored: str, flow_controlled: bool
) -> None:
    """A queued row no submit would store (planted in the database) used to fail
    LeaseWorkOrders for every worker of its queue; now it alone is failed."""
    if stored == "not json at all" and _postgres(env):
        pytest.skip("PostgreSQL's json type refuses text that is not JSON")
    if flow_controlled:
        await env.stub.UpdateQueue(
            rpc.UpdateQueueRequest(
                queue=m.Queue(name=queue_name(), max_in_flight=10),
                update_mask=field_mask_pb2.FieldMask(paths=["max_in_flight"]),
            )
        )
    before = metric_value(metric_reader, POISONED, {"loop": "lease"})
    first, bad, last = await env.submit_many([spec(), spec(), spec()])
    await _plant_policy(env, bad, stored)
    leased = await env.lease(n=3)
    assert sorted(o.work_order.id for o in leased) == sorted([first.id, last.id])
    got = await env.get(bad.name)
    assert got.state == S.WORK_ORDER_STATE_FAILED
    assert got.last_failure.type == "poisoned" and got.last_failure.details["loop"] == "lease"
    assert got.last_failure.details["stored_retry_policy"] == stored
    assert metric_value(metric_reader, POISONED, {"loop": "lease"}) == before + 1
    # The leased ones are really leased: they complete.
    for order in leased:
        assert (await env.complete(order)).state == S.WORK_ORDER_STATE_SUCCEEDED
    assert await env.lease(n=3) == []
