"""Circuit breakers shared by replicas, on both coordination backends.

A "replica" here is its own coordination client (for Redis, its own
RedisCoordination on the shared key prefix; in-process, the one shared
instance) and its own breaker objects, so state is only shared through the
backend, as between executor processes. Time is a ManualClock.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from conveyor.common.v1 import job_pb2
from conveyor_core.clock import ManualClock
from conveyor_core.coordination import Coordination, InProcessCoordination, RedisCoordination
from conveyor_executor.domain.failure import ErrorType
from conveyor_executor.runners import RunnerSettings, run_http
from conveyor_executor.runners.breaker import (
    BreakerPolicy,
    BreakerState,
    SharedBreaker,
    StateReads,
    breaker_key,
)
from conveyor_executor.runners.context import StepKind, StepStatus
from tests.helpers.http_fake import HttpFake, Reply
from tests.helpers.metrics import metric_value
from tests.helpers.run_context import MemoryRunContext

POLICY = BreakerPolicy(
    failure_threshold=2, cool_down_micros=30_000_000, trial_timeout_micros=60_000_000
)
PREFIX = "executor-breaker:"


class Replicas:
    def __init__(self, kind: str, redis_url: str = "", prefix: str = "") -> None:
        self.kind, self._redis_url, self._prefix = kind, redis_url, prefix
        self._shared = InProcessCoordination() if kind == "inprocess" else None
        self._started: list[Coordination] = []

    async def new(self) -> Coordination:
        coordination: Coordination = self._shared or RedisCoordination(
            self._redis_url, self._prefix
        )
        await coordination.start()
        self._started.append(coordination)
        return coordination

    async def stop(self) -> None:
        for coordination in self._started:
            await coordination.stop()


@pytest.fixture(params=["inprocess", pytest.param("redis", marks=pytest.mark.redis)])
def replicas_kind(request: pytest.FixtureRequest) -> Replicas:
    if request.param == "redis":
        return Replicas(
            "redis",
            request.getfixturevalue("redis_url"),
            request.getfixturevalue("redis_prefix"),
        )
    return Replicas("inprocess")


@pytest.fixture
async def replicas(replicas_kind: Replicas) -> AsyncIterator[Replicas]:
    yield replicas_kind
    await replicas_kind.stop()


@pytest.fixture
def fake() -> Iterator[HttpFake]:
    with HttpFake() as server:
        yield server


async def test_two_replicas_share_open_half_open_and_close(
    replicas: Replicas, metric_reader: InMemoryMetricReader
) -> None:
    clock = ManualClock()
    key = breaker_key("ns", "GET", f"http://127.0.0.1:1/{replicas.kind}/shared")
    one = SharedBreaker(await replicas.new(), clock, key, POLICY, PREFIX)
    two = SharedBreaker(await replicas.new(), clock, key, POLICY, PREFIX)

    admission, _ = await one.before_call()
    assert admission.allowed
    assert await one.after_call(admission, healthy=False) is None
    admission, _ = await two.before_call()
    opened = await two.after_call(admission, healthy=False)  # second consecutive failure
    assert opened is not None and (opened.from_state, opened.to_state) == (
        BreakerState.CLOSED,
        BreakerState.OPEN,
    )
    assert await one.state() is BreakerState.OPEN  # replica one sees replica two's change

    refused, _ = await one.before_call()
    assert not refused.allowed and refused.retry_in_seconds == 30.0
    clock.advance(30)
    trial, moved = await two.before_call()
    assert trial.allowed and trial.trial
    assert moved is not None and moved.to_state is BreakerState.HALF_OPEN
    other, _ = await one.before_call()  # only one trial across replicas
    assert not other.allowed
    closed = await two.after_call(trial, healthy=True)
    assert closed is not None and closed.to_state is BreakerState.CLOSED
    assert (await one.before_call())[0].allowed

    for from_state, to_state in [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]:
        attributes = {"endpoint": key, "from": from_state, "to": to_state}
        assert metric_value(metric_reader, "conveyor.executor.breaker_transitions", attributes) == 1


async def test_failed_trial_reopens_for_everyone(replicas: Replicas) -> None:
    clock = ManualClock()
    key = breaker_key("ns", "GET", f"http://127.0.0.1:1/{replicas.kind}/reopen")
    one = SharedBreaker(await replicas.new(), clock, key, POLICY, PREFIX)
    two = SharedBreaker(await replicas.new(), clock, key, POLICY, PREFIX)
    for _ in range(2):
        admission, _ = await one.before_call()
        await one.after_call(admission, healthy=False)
    clock.advance(31)
    trial, _ = await one.before_call()
    reopened = await one.after_call(trial, healthy=False)
    assert reopened is not None and reopened.to_state is BreakerState.OPEN
    refused, _ = await two.before_call()
    assert not refused.allowed and refused.retry_in_seconds == 30.0  # cool-down restarted


async def test_runs_on_two_replicas_trip_and_recover_one_breaker(
    replicas: Replicas, fake: HttpFake
) -> None:
    clock = ManualClock()
    fake.route("GET", "/down", Reply(500))
    target = job_pb2.HttpTarget(
        endpoints=[job_pb2.HttpEndpoint(name="down", method="GET", url=fake.url("/down?run=1"))],
        circuit_breaker=job_pb2.CircuitBreakerPolicy(failure_threshold=2),
    )
    settings = RunnerSettings(breaker_cool_down_seconds=60, retry_initial_interval_seconds=0.01)
    replica_one, replica_two = await replicas.new(), await replicas.new()

    for coordination in (replica_one, replica_two):  # a 500 is not retried: one call each
        outcome = await run_http(target, [], MemoryRunContext(), settings, coordination, clock)
        assert outcome.error is not None and outcome.error.type is ErrorType.HANDLER_LOGIC

    refused_ctx = MemoryRunContext()
    outcome = await run_http(target, [], refused_ctx, settings, replica_one, clock)
    assert outcome.error is not None and outcome.error.type is ErrorType.CIRCUIT_OPEN
    assert outcome.error.retryable and outcome.error.details["endpoint"] == "down"
    assert len(fake.requests("/down")) == 2  # the refused call never left the process
    call = refused_ctx.steps_of(StepKind.HTTP_CALL)[0]
    assert call.attributes["refused_by_breaker"] is True

    fake.route("GET", "/down", Reply(200))
    clock.advance(60)
    recovered_ctx = MemoryRunContext()
    outcome = await run_http(target, [], recovered_ctx, settings, replica_two, clock)
    assert outcome.succeeded
    transitions = [
        (s.attributes["from"], s.attributes["to"])
        for s in recovered_ctx.steps_of(StepKind.BREAKER_TRANSITION)
    ]
    assert transitions == [("open", "half_open"), ("half_open", "closed")]
    assert all(
        s.status is StepStatus.INFO for s in recovered_ctx.steps_of(StepKind.BREAKER_TRANSITION)
    )


async def test_client_errors_do_not_trip_the_breaker(replicas: Replicas, fake: HttpFake) -> None:
    clock = ManualClock()
    fake.route("GET", "/bad", Reply(400))
    target = job_pb2.HttpTarget(
        endpoints=[job_pb2.HttpEndpoint(name="bad", method="GET", url=fake.url("/bad"))],
        circuit_breaker=job_pb2.CircuitBreakerPolicy(failure_threshold=1),
    )
    coordination = await replicas.new()
    for _ in range(3):
        outcome = await run_http(
            target, [], MemoryRunContext(), RunnerSettings(), coordination, clock
        )
        assert outcome.error is not None and outcome.error.type is ErrorType.INVALID_INPUT
    assert len(fake.requests("/bad")) == 3


async def test_unreachable_coordination_lets_calls_through(fake: HttpFake) -> None:
    fake.route("GET", "/up", Reply(200))
    unreachable = RedisCoordination("redis://127.0.0.1:1", "nowhere:", connect_timeout=0.5)
    try:
        target = job_pb2.HttpTarget(
            endpoints=[job_pb2.HttpEndpoint(name="up", method="GET", url=fake.url("/up"))]
        )
        outcome = await run_http(
            target, [], MemoryRunContext(), RunnerSettings(), unreachable, ManualClock()
        )
        assert outcome.succeeded  # fail open: losing the breaker must not stop all work
        assert len(fake.requests("/up")) == 1
    finally:
        await unreachable.stop()


class CountedReads(InProcessCoordination):
    """The in-process backend, counting value reads; `hold` parks the next read."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
        self.hold: asyncio.Event | None = None
        self.parked = asyncio.Event()

    async def value_get(self, name: str) -> str | None:
        self.reads += 1
        value = await super().value_get(name)
        hold, self.hold = self.hold, None
        if hold is not None:  # read, and its answer not back yet
            self.parked.set()
            await hold.wait()
        return value


async def test_a_read_asked_during_another_waits_for_a_read_of_its_own() -> None:
    coordination = CountedReads()
    reads = StateReads(coordination)
    coordination.hold = release = asyncio.Event()
    first = asyncio.create_task(reads.get("k"))
    await coordination.parked.wait()  # the first batch is reading (the old value)
    assert await coordination.value_compare_and_set("k", None, "new")
    second = asyncio.create_task(reads.get("k"))
    release.set()
    assert await first is None
    assert await second == "new"  # not the answer of the read that began before it asked


async def test_concurrent_runs_share_breaker_reads_and_still_open_it(fake: HttpFake) -> None:
    clock = ManualClock()
    fake.route("GET", "/flaky", Reply(500))
    target = job_pb2.HttpTarget(
        endpoints=[job_pb2.HttpEndpoint(name="flaky", method="GET", url=fake.url("/flaky"))],
        circuit_breaker=job_pb2.CircuitBreakerPolicy(failure_threshold=3),
    )
    settings = RunnerSettings(breaker_cool_down_seconds=60)
    coordination = CountedReads()
    reads = StateReads(coordination)

    async def run() -> ErrorType | None:
        outcome = await run_http(
            target, [], MemoryRunContext(), settings, coordination, clock, breaker_reads=reads
        )
        return None if outcome.error is None else outcome.error.type

    errors = await asyncio.gather(*(run() for _ in range(20)))
    assert set(errors) <= {ErrorType.HANDLER_LOGIC, ErrorType.CIRCUIT_OPEN}
    assert len(fake.requests("/flaky")) == errors.count(ErrorType.HANDLER_LOGIC)
    key = breaker_key(MemoryRunContext().namespace, "GET", fake.url("/flaky"))
    breaker = SharedBreaker(coordination, clock, key, POLICY, RunnerSettings().breaker_key_prefix)
    assert await breaker.state() is BreakerState.OPEN
    assert coordination.reads < 2 * 20  # without StateReads: one before and one after each call

    assert await run() is ErrorType.CIRCUIT_OPEN  # open for the next run too
    fake.route("GET", "/flaky", Reply(200))
    clock.advance(60)
    trials = await asyncio.gather(run(), run())
    assert sorted(map(str, trials)) == sorted(map(str, [None, ErrorType.CIRCUIT_OPEN]))  # 1 trial
    assert await run() is None and await breaker.state() is BreakerState.CLOSED
