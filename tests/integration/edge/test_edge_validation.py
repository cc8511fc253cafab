"""Input the contracts call invalid gets INVALID_ARGUMENT naming the field, never OK, INTERNAL
or RESOURCE_EXHAUSTED: unknown enum values, negative or boundary numbers and durations, URLs,
header values, argv and env with control characters, and values echoed back cut short.
Each case runs against a real Platform of the four services, on both backends."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2, timestamp_pb2

from conveyor.common.v1 import job_pb2, types_pb2
from conveyor.events.v1 import messages_pb2 as em
from conveyor.events.v1 import service_pb2 as erpc
from conveyor.executor.v1 import service_pb2 as xrpc
from conveyor.queue.v1 import messages_pb2 as qm
from conveyor.queue.v1 import service_pb2 as qrpc
from conveyor.scheduler.v1 import messages_pb2 as sm
from conveyor.scheduler.v1 import service_pb2 as srpc
from conveyor_core.grpc import rich_error_details
from conveyor_core.protoconv import MAX_TIMESTAMP_SECONDS
from tests.integration.edge.conftest import JOB, NS, QUEUE, Stubs


def _endpoint(**fields: Any) -> job_pb2.HttpEndpoint:
    values: dict[str, Any] = {"name": "e", "method": "GET", "url": "http://127.0.0.1:9/"}
    values.update(fields)
    return job_pb2.HttpEndpoint(**values)


def _http(*, endpoint: job_pb2.HttpEndpoint | None = None, **http: Any) -> sm.Job:
    target = job_pb2.HttpTarget(endpoints=[endpoint or _endpoint()], **http)
    return sm.Job(target=job_pb2.JobTarget(http=target))


def _command(**fields: Any) -> sm.Job:
    values: dict[str, Any] = {"argv": ["true"]}
    values.update(fields)
    return sm.Job(target=job_pb2.JobTarget(command=job_pb2.CommandTarget(**values)))


def _nanos(nanos: int) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=0, nanos=nanos)


Call = Callable[[Stubs], Awaitable[Any]]


_ids = itertools.count(1)


def create_job(job: sm.Job) -> Call:
    """CreateJob under a new id (an accepted case must not make the next one ALREADY_EXISTS)."""
    return lambda s: s.scheduler.CreateJob(
        srpc.CreateJobRequest(parent=NS, job_id=f"j{next(_ids)}", job=job)
    )


def create_schedule(schedule: sm.Schedule) -> Call:
    return lambda s: s.scheduler.CreateSchedule(
        srpc.CreateScheduleRequest(parent=JOB, schedule_id=f"s{next(_ids)}", schedule=schedule)
    )


def submit(**spec: Any) -> Call:
    return lambda s: s.queue.SubmitWorkOrder(
        qrpc.SubmitWorkOrderRequest(parent=QUEUE, work_order=qm.WorkOrderSpec(**spec))
    )


EVERY_MINUTE = sm.IntervalSpec(every=duration_pb2.Duration(seconds=60))

CASES: dict[str, tuple[Call, str]] = {
    # -- unknown enum values ----------------------------------------------------------
    "list order 99": (
        lambda s: s.queue.ListWorkOrders(qrpc.ListWorkOrdersRequest(parent=QUEUE, order=99)),  # type: ignore[arg-type]
        "order",
    ),
    "list states 99": (
        lambda s: s.queue.ListWorkOrders(qrpc.ListWorkOrdersRequest(parent=QUEUE, states=[1, 99])),  # type: ignore[list-item]
        "states[1]",
    ),
    "plan mode 99": (create_job(_http(mode=99)), "job.target.http.mode"),  # type: ignore[arg-type]
    "loop strategy 99": (
        create_job(_command(loop=job_pb2.LoopPolicy(strategy=99))),  # type: ignore[arg-type]
        "job.target.command.loop.strategy",
    ),
    "keep policy 99": (
        create_job(_command(keep_workspace=99)),  # type: ignore[arg-type]
        "job.target.command.keep_workspace",
    ),
    "adaptive mode 99": (
        create_job(sm.Job(target=_http().target, adaptive_policy=sm.AdaptivePolicy(mode=99))),  # type: ignore[arg-type]
        "job.adaptive_policy.mode",
    ),
    "overlap policy 99": (
        create_schedule(sm.Schedule(interval=EVERY_MINUTE, overlap_policy=99)),  # type: ignore[arg-type]
        "schedule.overlap_policy",
    ),
    "catch-up mode 99": (
        create_schedule(sm.Schedule(interval=EVERY_MINUTE, catch_up_mode=99)),  # type: ignore[arg-type]
        "schedule.catch_up_mode",
    ),
    "event order 99": (
        lambda s: s.events.ListEvents(erpc.ListEventsRequest(parent=f"{NS}/topics/t", order=99)),  # type: ignore[arg-type]
        "order",
    ),
    "run states 99": (
        lambda s: s.executor.ListRuns(xrpc.ListRunsRequest(parent=NS, states=[99])),  # type: ignore[list-item]
        "states[0]",
    ),
    # -- durations, numbers ---------------------------------------------------------------
    "negative nanos-only jitter": (
        create_schedule(sm.Schedule(interval=EVERY_MINUTE, jitter=_nanos(-1))),
        "schedule.jitter",
    ),
    "negative nanos-only timeout": (
        create_job(sm.Job(target=_http().target, start_to_close_timeout=_nanos(-5))),
        "job.start_to_close_timeout",
    ),
    "negative nanos-only endpoint timeout": (
        create_job(_http(endpoint=_endpoint(timeout=_nanos(-5)))),
        "job.target.http.endpoints[0].timeout",
    ),
    "interval 1 s minus 1 ns": (
        create_schedule(sm.Schedule(interval=sm.IntervalSpec(every=_nanos(999_999_999)))),
        "schedule.interval.every",
    ),
    "maximum_attempts -1 (queue)": (
        submit(retry_policy=types_pb2.RetryPolicy(maximum_attempts=-1)),
        "work_order.retry_policy.maximum_attempts",
    ),
    "negative retry interval in nanos (queue)": (
        submit(retry_policy=types_pb2.RetryPolicy(initial_interval=_nanos(-1))),
        "work_order.retry_policy.initial_interval",
    ),
    "backoff coefficient below 1": (
        create_job(
            sm.Job(
                target=_http().target, retry_policy=types_pb2.RetryPolicy(backoff_coefficient=0.5)
            )
        ),
        "job.retry_policy.backoff_coefficient",
    ),
    "jitter above 1": (
        submit(retry_policy=types_pb2.RetryPolicy(jitter=1.5)),
        "work_order.retry_policy.jitter",
    ),
    "job priority -1": (create_job(sm.Job(target=_http().target, priority=-1)), "job.priority"),
    "max parallel -1": (create_job(_http(max_parallel=-1)), "job.target.http.max_parallel"),
    "breaker threshold -1": (
        create_job(_http(circuit_breaker=job_pb2.CircuitBreakerPolicy(failure_threshold=-1))),
        "job.target.http.circuit_breaker.failure_threshold",
    ),
    "negative breaker cool-down": (
        create_job(_http(circuit_breaker=job_pb2.CircuitBreakerPolicy(cool_down=_nanos(-1)))),
        "job.target.http.circuit_breaker.cool_down",
    ),
    "loop iterations -1": (
        create_job(_command(loop=job_pb2.LoopPolicy(strategy=1, iterations=-1))),
        "job.target.command.loop.iterations",
    ),
    "loop max_iterations -1": (
        create_job(_command(loop=job_pb2.LoopPolicy(strategy=2, max_iterations=-1))),
        "job.target.command.loop.max_iterations",
    ),
    "negative command timeout": (
        create_job(_command(timeout=_nanos(-1))),
        "job.target.command.timeout",
    ),
    "negative check timeout": (
        create_job(
            _command(
                checks=[job_pb2.VerificationCheck(name="c", argv=["true"], timeout=_nanos(-1))]
            )
        ),
        "job.target.command.checks[0].timeout",
    ),
    "negative adaptive max interval": (
        create_job(
            sm.Job(
                target=_http().target,
                adaptive_policy=sm.AdaptivePolicy(mode=2, max_interval=_nanos(-1)),
            )
        ),
        "job.adaptive_policy.max_interval",
    ),
    "negative queue priority": (submit(priority=-1), "work_order.priority"),
    # -- URLs, headers, argv, env -------------------------------------------------------
    "URL with an unclosed IPv6 host": (
        create_job(_http(endpoint=_endpoint(url="http://[::1/"))),
        "job.target.http.endpoints[0].url",
    ),
    "URL with a space": (
        create_job(_http(endpoint=_endpoint(url="http://exa mple.com/"))),
        "job.target.http.endpoints[0].url",
    ),
    "URL with port 99999": (
        create_job(_http(endpoint=_endpoint(url="http://127.0.0.1:99999/"))),
        "job.target.http.endpoints[0].url",
    ),
    "URL with CR/LF": (
        create_job(_http(endpoint=_endpoint(url="http://127.0.0.1/\r\nX-Evil: 1"))),
        "job.target.http.endpoints[0].url",
    ),
    "header value with CR/LF": (
        create_job(
            _http(endpoint=_endpoint(headers={"X-A": job_pb2.HeaderValue(value="a\r\nX-Evil: 1")}))
        ),
        "job.target.http.endpoints[0].headers[X-A]",
    ),
    "argv with NUL": (create_job(_command(argv=["echo", "a\x00b"])), "job.target.command.argv[1]"),
    "env value with LF": (
        create_job(_command(env={"A": "x\ny"})),
        "job.target.command.env[A]",
    ),
    "env name with NUL": (
        create_job(_command(env={"A\x00": "x"})),
        "job.target.command.env",
    ),
    "six-field cron": (
        create_schedule(sm.Schedule(cron=sm.CronSpec(expression="* * * * * *"))),
        "schedule.cron.expression",
    ),
    "on-event topic of another namespace": (
        create_schedule(sm.Schedule(on_event=sm.EventSpec(topic="namespaces/other/topics/t"))),
        "schedule.on_event.topic",
    ),
    # -- requests the database could not store (PostgreSQL answered INTERNAL) -----------
    "NUL in a label": (submit(labels={"k": "a\x00b"}), "work_order.labels['k']"),
    "NUL in an idempotency key": (submit(idempotency_key="k\x00"), "work_order.idempotency_key"),
    "NUL in a job description": (
        create_job(sm.Job(target=_http().target, description="a\x00")),
        "job.description",
    ),
    "NUL in a topic description": (
        lambda s: s.events.CreateTopic(
            erpc.CreateTopicRequest(
                parent=NS, topic_id=f"t{next(_ids)}", topic=em.Topic(description="a\x00")
            )
        ),
        "topic.description",
    ),
    "NUL in an event's message id": (
        lambda s: s.events.PublishEvents(
            erpc.PublishEventsRequest(
                parent=f"{NS}/topics/t", events=[em.EventDraft(message_id="m\x00")]
            )
        ),
        "events[0].message_id",
    ),
    "worker identity longer than its column": (
        lambda s: s.queue.LeaseWorkOrders(
            qrpc.LeaseWorkOrdersRequest(
                parent=NS, queues=["jobs"], max_work_orders=1, worker_identity="w" * 257
            )
        ),
        "worker_identity",
    ),
    "workflow target name longer than the executor's": (
        create_job(
            sm.Job(
                target=job_pb2.JobTarget(
                    workflow=job_pb2.WorkflowTarget(workflow="w" * 64, handler="h")
                )
            )
        ),
        "job.target.workflow.workflow",
    ),
    "empty batch submit": (
        lambda s: s.queue.BatchSubmitWorkOrders(qrpc.BatchSubmitWorkOrdersRequest(parent=QUEUE)),
        "requests",
    ),
    "non-ASCII digit as an event sequence": (
        lambda s: s.events.GetEvent(erpc.GetEventRequest(name=f"{NS}/topics/t/events/\uff12")),
        "name",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_invalid_input_is_invalid_argument_naming_the_field(stubs: Stubs, case: str) -> None:
    call, field = CASES[case]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call(stubs)
    error = info.value
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
    fields = [f for f, _ in rich_error_details(error).field_violations]
    assert field in fields, fields


LONG = "n" * 10_000

LONG_VALUES: dict[str, Call] = {
    "queue parent": lambda s: s.queue.SubmitWorkOrder(
        qrpc.SubmitWorkOrderRequest(
            parent=f"namespaces/{LONG}/queues/q", work_order=qm.WorkOrderSpec()
        )
    ),
    "work order name": lambda s: s.queue.GetWorkOrder(qrpc.GetWorkOrderRequest(name=LONG)),
    "job id": lambda s: s.scheduler.CreateJob(
        srpc.CreateJobRequest(parent=NS, job_id=LONG, job=_http())
    ),
    "schedule name": lambda s: s.scheduler.GetSchedule(srpc.GetScheduleRequest(name=LONG)),
    "topic id": lambda s: s.events.CreateTopic(erpc.CreateTopicRequest(parent=NS, topic_id=LONG)),
    "event name": lambda s: s.events.GetEvent(
        erpc.GetEventRequest(name=f"{NS}/topics/t/events/{'9' * 10_000}")
    ),
    "run name": lambda s: s.executor.GetRun(xrpc.GetRunRequest(name=LONG)),
    "many bad labels": lambda s: s.queue.SubmitWorkOrder(
        qrpc.SubmitWorkOrderRequest(
            parent=QUEUE,
            work_order=qm.WorkOrderSpec(labels={f"{i}{LONG[:300]}": LONG for i in range(100)}),
        )
    ),
}


@pytest.mark.parametrize("case", list(LONG_VALUES))
async def test_a_very_long_value_is_echoed_cut_short(stubs: Stubs, case: str) -> None:
    """A 10,000-character value used to come back whole in the field violation: trailers over
    the 16 KiB a client accepts, so the caller saw RESOURCE_EXHAUSTED instead."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await LONG_VALUES[case](stubs)
    error = info.value
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
    violations = rich_error_details(error).field_violations
    assert violations
    assert all(len(f) <= 200 and len(d) <= 400 for f, d in violations)
    assert len(error.details() or "") <= 1000
    assert "characters)" in (error.details() or "") + "".join(d for _, d in violations)


async def test_a_preview_at_the_last_representable_instant_answers(stubs: Stubs) -> None:
    """Its horizon ran past year 9999 (OverflowError: INTERNAL); now it ends there."""
    schedule = await create_schedule(sm.Schedule(interval=EVERY_MINUTE))(stubs)
    last = timestamp_pb2.Timestamp(seconds=MAX_TIMESTAMP_SECONDS, nanos=999_999_999)
    near = timestamp_pb2.Timestamp(seconds=MAX_TIMESTAMP_SECONDS - 600)
    at_end = await stubs.scheduler.PreviewSchedule(
        srpc.PreviewScheduleRequest(name=schedule.schedule.name, start_time=last, count=5)
    )
    assert list(at_end.fire_times) == []  # no slot is left after it
    before_end = await stubs.scheduler.PreviewSchedule(
        srpc.PreviewScheduleRequest(name=schedule.schedule.name, start_time=near, count=20)
    )
    times = [t.seconds for t in before_end.fire_times]
    assert 10 <= len(times) <= 11 and all(t <= MAX_TIMESTAMP_SECONDS for t in times)  # 600 s / 60 s


async def test_a_rate_limit_period_past_the_duration_range_is_invalid_argument(
    stubs: Stubs,
) -> None:
    """Found by tests/integration/edge/test_malformed_requests.py: a period of 2^62 s
    overflowed ToTimedelta (INTERNAL)."""
    rate = qm.RateLimit(tokens=1, period=duration_pb2.Duration(seconds=2**62))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stubs.queue.UpdateQueue(
            qrpc.UpdateQueueRequest(queue=qm.Queue(name=f"{NS}/queues/r", rate_limit_per_key=rate))
        )
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    fields = [f for f, _ in rich_error_details(info.value).field_violations]
    assert fields == ["queue.rate_limit_per_key.period"]
