"""Property-based: generated requests, mostly malformed, against the main RPCs of the four
services on both backends. Whatever a request holds, the answer is never UNKNOWN or INTERNAL,
an INVALID_ARGUMENT names at least one field, and the service still answers a valid request.

Requests are built from each message's descriptor: every field may be set, to boundary and
hostile values (negative, 2^31-1, NaN, infinity, enum 99, Timestamps past year 9999, Durations
of 2^62 s, nanos out of range, NUL/CR/LF, non-ASCII digits, 10,000 characters), and resource
names are valid half the time so requests get past name checks into the deeper validation.
The run time is bounded by the `conveyor` Hypothesis profile (tests/conftest.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import given
from hypothesis import strategies as st

from conveyor.events.v1 import service_pb2 as erpc
from conveyor.executor.v1 import service_pb2 as xrpc
from conveyor.queue.v1 import service_pb2 as qrpc
from conveyor.scheduler.v1 import service_pb2 as srpc
from conveyor_core.grpc import rich_error_details
from tests.integration.edge.conftest import JOB, NS, QUEUE, SCHEDULE, TOPIC, Stubs, stubs_of

#: Names a request may carry: valid ones of the module's fixtures, and malformed ones.
NAMES = [
    NS,
    JOB,
    QUEUE,
    TOPIC,
    SCHEDULE,
    f"{QUEUE}/workOrders/00000000-0000-0000-0000-000000000001",
    f"{TOPIC}/events/1",
    f"{NS}/runs/r1",
    "jobs",
    "t",
    "namespaces/N\n",
    f"{NS}\n/queues/q",
    "namespaces/test/queues/-",
    f"{TOPIC}/events/\uff12",
    "",
]
HOSTILE_TEXT = [
    "",
    "a",
    "http://[::1/",
    "http://127.0.0.1:99999/",
    "http://127.0.0.1:9/ok",
    "* * * * * *",
    "*/5 * * * *",
    "a\x00b",
    "a\r\nb",
    "\uff12",
    "x" * 300,
    "y" * 10_000,
    "GET",
    "Europe/Berlin",
    "Not/AZone",
]
INTS = [0, 1, -1, 2, 5, 99, 1000, 1001, 2**31 - 1, -(2**31)]
INT64S = [*INTS, 2**62, -(2**62), 2**63 - 1, -(2**63)]
FLOATS = [0.0, 0.5, 1.0, 1.5, 2.0, -1.0, float("nan"), float("inf"), float("-inf"), 1e308]
MAX_DEPTH = 4


def _text(field: FieldDescriptor) -> st.SearchStrategy[str]:
    if field.name in ("parent", "name", "topic", "job", "schedule", "work_order"):
        return st.one_of(st.sampled_from(NAMES), st.sampled_from(HOSTILE_TEXT))
    return st.one_of(st.sampled_from(HOSTILE_TEXT), st.text(max_size=20))


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return _text(field)
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.one_of(st.just(b""), st.binary(max_size=16), st.just(b"\xff" * 70_000))
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.sampled_from(FLOATS)
    if kind == FieldDescriptor.TYPE_ENUM:
        return st.sampled_from([v.number for v in field.enum_type.values] + [99])
    if kind in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64):
        return st.sampled_from(INT64S)
    if kind in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
        return st.sampled_from([i for i in INTS if i >= 0])
    if kind in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        return st.sampled_from([i for i in INT64S if i >= 0])
    return st.sampled_from(INTS)


def _well_known(descriptor: Descriptor) -> st.SearchStrategy[dict[str, Any]] | None:
    if descriptor.full_name == "google.protobuf.Timestamp":
        seconds = [0, 1_893_456_000, -62_135_596_801, 253_402_300_799, 253_402_300_800, 2**62]
        return st.fixed_dictionaries(
            {
                "seconds": st.sampled_from(seconds),
                "nanos": st.sampled_from([0, 999_999_999, -1, 10**9]),
            }
        )
    if descriptor.full_name == "google.protobuf.Duration":
        return st.fixed_dictionaries(
            {
                "seconds": st.sampled_from([0, 1, 60, -1, 10**12, 2**62, 315_576_000_001]),
                "nanos": st.sampled_from([0, 1, -1, 999_999_999, -999_999_999, 10**9]),
            }
        )
    if descriptor.full_name == "google.protobuf.FieldMask":
        names = (
            [f.name for f in descriptor.containing_type.fields]
            if descriptor.containing_type
            else []
        )
        return st.fixed_dictionaries(
            {"paths": st.lists(st.sampled_from([*names, "bogus", "name"]), max_size=3)}
        )
    return None


@st.composite
def message(draw: st.DrawFn, cls: type[Message], depth: int = 0) -> Message:
    out = cls()
    _fill(draw, out, depth)
    return out


def _fill(draw: st.DrawFn, out: Message, depth: int) -> None:
    descriptor = out.DESCRIPTOR
    known = _well_known(descriptor)
    if known is not None:
        for key, value in draw(known).items():
            if isinstance(value, list):
                getattr(out, key).extend(value)
            else:
                setattr(out, key, value)
        return
    for field in descriptor.fields:
        if field.containing_oneof is not None and out.WhichOneof(field.containing_oneof.name):
            continue
        if not draw(st.booleans()):
            continue
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if depth >= MAX_DEPTH:
                continue
            if field.message_type.GetOptions().map_entry:
                key_field = field.message_type.fields_by_name["key"]
                value_field = field.message_type.fields_by_name["value"]
                container = getattr(out, field.name)
                for _ in range(draw(st.integers(0, 2))):
                    key = draw(_scalar(key_field))
                    if value_field.type == FieldDescriptor.TYPE_MESSAGE:
                        _fill(draw, container[key], depth + 1)
                    else:
                        container[key] = draw(_scalar(value_field))
            elif field.is_repeated:
                container = getattr(out, field.name)
                for _ in range(draw(st.integers(0, 2))):
                    _fill(draw, container.add(), depth + 1)
            else:
                _fill(draw, getattr(out, field.name), depth + 1)
                if not getattr(out, field.name).ListFields():
                    getattr(out, field.name).SetInParent()
        elif field.is_repeated:
            getattr(out, field.name).extend(draw(st.lists(_scalar(field), max_size=3)))
        else:
            setattr(out, field.name, draw(_scalar(field)))


Rpc = Callable[[Stubs, Any], Any]
T = CALL_TIMEOUT_SECONDS = 30.0  # a deadline per generated call: a hang is a failure too


def _ids(prefix: str) -> st.SearchStrategy[str]:
    return st.integers(0, 10**9).map(lambda i: f"{prefix}{i}")


@st.composite
def request(
    draw: st.DrawFn, cls: type[Message], valid: dict[str, st.SearchStrategy[Any]]
) -> Message:
    """A generated `cls`, whose `valid` fields (dotted paths) hold a valid value 4 times in
    5, so most requests get past the name checks into the deeper validation and storage."""
    out = draw(message(cls))
    for path, values in valid.items():
        if draw(st.integers(0, 4)) == 0:
            continue
        *parents, name = path.split(".")
        target = out
        for part in parents:
            target = getattr(target, part)
        value = draw(values)
        if isinstance(value, list):
            del getattr(target, name)[:]
            getattr(target, name).extend(value)
        else:
            setattr(target, name, value)
    return out


def j(value: Any) -> st.SearchStrategy[Any]:
    return st.just(value)


#: The main RPCs of each service: request type, the call, the fields made valid.
RPCS: dict[str, tuple[type[Message], Rpc, dict[str, st.SearchStrategy[Any]]]] = {
    "queue.SubmitWorkOrder": (
        qrpc.SubmitWorkOrderRequest,
        lambda s, r: s.queue.SubmitWorkOrder(r, timeout=T),
        {"parent": j(QUEUE)},
    ),
    "queue.BatchSubmitWorkOrders": (
        qrpc.BatchSubmitWorkOrdersRequest,
        lambda s, r: s.queue.BatchSubmitWorkOrders(r, timeout=T),
        {"parent": j(QUEUE)},
    ),
    "queue.LeaseWorkOrders": (
        qrpc.LeaseWorkOrdersRequest,
        lambda s, r: s.queue.LeaseWorkOrders(r, timeout=T),
        {"parent": j(NS), "queues": j(["jobs"]), "worker_identity": j("w1")},
    ),
    "queue.ListWorkOrders": (
        qrpc.ListWorkOrdersRequest,
        lambda s, r: s.queue.ListWorkOrders(r, timeout=T),
        {"parent": j(QUEUE)},
    ),
    "queue.UpdateQueue": (
        qrpc.UpdateQueueRequest,
        lambda s, r: s.queue.UpdateQueue(r, timeout=T),
        {"queue.name": _ids(f"{NS}/queues/q")},
    ),
    "scheduler.CreateJob": (
        srpc.CreateJobRequest,
        lambda s, r: s.scheduler.CreateJob(r, timeout=T),
        {"parent": j(NS), "job_id": _ids("j")},
    ),
    "scheduler.CreateSchedule": (
        srpc.CreateScheduleRequest,
        lambda s, r: s.scheduler.CreateSchedule(r, timeout=T),
        {"parent": j(JOB), "schedule_id": _ids("s")},
    ),
    "scheduler.PreviewSchedule": (
        srpc.PreviewScheduleRequest,
        lambda s, r: s.scheduler.PreviewSchedule(r, timeout=T),
        {"name": j(SCHEDULE)},
    ),
    "scheduler.BackfillSchedule": (
        srpc.BackfillScheduleRequest,
        lambda s, r: s.scheduler.BackfillSchedule(r, timeout=T),
        {"name": j(SCHEDULE)},
    ),
    "events.CreateTopic": (
        erpc.CreateTopicRequest,
        lambda s, r: s.events.CreateTopic(r, timeout=T),
        {"parent": j(NS), "topic_id": _ids("t")},
    ),
    "events.PublishEvents": (
        erpc.PublishEventsRequest,
        lambda s, r: s.events.PublishEvents(r, timeout=T),
        {"parent": j(TOPIC)},
    ),
    "events.ListEvents": (
        erpc.ListEventsRequest,
        lambda s, r: s.events.ListEvents(r, timeout=T),
        {"parent": j(TOPIC)},
    ),
    "events.ReserveEvents": (
        erpc.ReserveEventsRequest,
        lambda s, r: s.events.ReserveEvents(r, timeout=T),
        {"parent": j(TOPIC), "run_id": _ids("run-")},
    ),
    "executor.ListRuns": (
        xrpc.ListRunsRequest,
        lambda s, r: s.executor.ListRuns(r, timeout=T),
        {"parent": j(NS)},
    ),
    "executor.GetRun": (xrpc.GetRunRequest, lambda s, r: s.executor.GetRun(r, timeout=T), {}),
}
NEVER = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
# The servers run in the main thread while Hypothesis draws in another; their use of the
# global `random` (retry jitter) looks to Hypothesis like a strategy using it.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Do not use the `random` module inside strategies"
    ":hypothesis.errors.HypothesisDeprecationWarning"
)


def _answer(stubs: Stubs, rpc: Rpc, request: Message) -> None:
    """One blocking call (the servers run on the test's event loop, in the main thread)."""
    try:
        rpc(stubs, request)
    except grpc.RpcError as error:
        code = error.code()  # type: ignore[attr-defined]
        assert code not in NEVER, (code, error.details(), request)  # type: ignore[attr-defined]
        if code is grpc.StatusCode.INVALID_ARGUMENT:
            assert rich_error_details(error).field_violations, (error, request)  # type: ignore[arg-type]


async def _still_answers(stubs: Stubs) -> None:
    await stubs.queue.ListWorkOrders(qrpc.ListWorkOrdersRequest(parent=QUEUE, page_size=1))
    await stubs.scheduler.GetJob(srpc.GetJobRequest(name=JOB))
    await stubs.events.GetTopic(erpc.GetTopicRequest(name=TOPIC))
    await stubs.executor.ListRuns(xrpc.ListRunsRequest(parent=NS, page_size=1))


@pytest.mark.parametrize("rpc_name", list(RPCS))
async def test_generated_requests_never_get_unknown_or_internal(
    stubs: Stubs, rpc_name: str
) -> None:
    request_type, rpc, valid = RPCS[rpc_name]

    def run() -> None:
        with grpc.insecure_channel(stubs.address) as channel:
            blocking = stubs_of(channel)

            @given(request(request_type, valid))
            def property_(request: Message) -> None:
                _answer(blocking, rpc, request)

            property_()

    await asyncio.to_thread(run)  # Hypothesis drives blocking calls; the servers keep serving
    await _still_answers(stubs)
