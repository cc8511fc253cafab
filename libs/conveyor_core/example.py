"""The example `make run` shows: a scheduled HTTP job, run by the executor, traced in the journal.

It starts a tiny web server on 127.0.0.1 (the "service" the job calls), defines
the job `hello` and an interval schedule on it, and prints each run as the
executor records it, with the order's trail in the journal:
schedule fired -> work order queued -> leased -> run started -> succeeded.
Everything goes through the public gRPC API, as a client in any language would.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import grpc
from google.protobuf import duration_pb2

from conveyor.common.v1 import job_pb2
from conveyor.events.v1 import service_pb2 as events_rpc
from conveyor.events.v1 import service_pb2_grpc as events_grpc
from conveyor.executor.v1 import messages_pb2 as executor_pb
from conveyor.executor.v1 import service_pb2 as executor_rpc
from conveyor.executor.v1 import service_pb2_grpc as executor_grpc
from conveyor.scheduler.v1 import messages_pb2 as scheduler_pb
from conveyor.scheduler.v1 import service_pb2 as scheduler_rpc
from conveyor.scheduler.v1 import service_pb2_grpc as scheduler_grpc
from conveyor_core.grpc import create_channel

log = logging.getLogger(__name__)
NAMESPACE = "default"  # the namespace the executor leases from by default
JOB = f"namespaces/{NAMESPACE}/jobs/hello"
FINISHED = {executor_pb.RUN_STATE_SUCCEEDED, executor_pb.RUN_STATE_FAILED}


async def run_example(address: str, period: float = 3.0) -> None:
    server = await asyncio.start_server(_answer_hello, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hello"
    async with server, create_channel(address) as channel:
        job = await _define_job(scheduler_grpc.SchedulerServiceStub(channel), url, period)
        print(f"[example] job {job.name} v{job.version} calls {url} every {period:g}s", flush=True)
        await _show_runs(
            executor_grpc.ExecutorServiceStub(channel), events_grpc.JournalServiceStub(channel)
        )


async def _answer_hello(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A one-route HTTP/1.1 server: enough for the example job to call."""
    try:
        await reader.readuntil(b"\r\n\r\n")
        body = b'{"greeting": "hello from the example service"}'
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass  # the caller went away: nothing to answer
    finally:
        writer.close()


async def _define_job(
    scheduler: scheduler_grpc.SchedulerServiceAsyncStub, url: str, period: float
) -> scheduler_pb.Job:
    """Create the job and its schedule, or point an existing job at this URL (a new version)."""
    target = job_pb2.JobTarget(
        http=job_pb2.HttpTarget(
            endpoints=[job_pb2.HttpEndpoint(name="hello", method="GET", url=url)]
        )
    )
    try:
        reply = await scheduler.CreateJob(
            scheduler_rpc.CreateJobRequest(
                parent=f"namespaces/{NAMESPACE}",
                job_id="hello",
                job=scheduler_pb.Job(target=target),
            )
        )
    except grpc.aio.AioRpcError as error:
        if error.code() != grpc.StatusCode.ALREADY_EXISTS:
            raise
        updated = await scheduler.UpdateJob(
            scheduler_rpc.UpdateJobRequest(job=scheduler_pb.Job(name=JOB, target=target))
        )
        return updated.job
    every = duration_pb2.Duration()
    every.FromTimedelta(timedelta(seconds=period))
    await scheduler.CreateSchedule(
        scheduler_rpc.CreateScheduleRequest(
            parent=JOB,
            schedule_id="every-few-seconds",
            schedule=scheduler_pb.Schedule(interval=scheduler_pb.IntervalSpec(every=every)),
        )
    )
    return reply.job


async def _show_runs(
    executor: executor_grpc.ExecutorServiceAsyncStub, journal: events_grpc.JournalServiceAsyncStub
) -> None:
    shown: set[str] = set()
    while True:
        reply = await executor.ListRuns(
            executor_rpc.ListRunsRequest(parent=f"namespaces/{NAMESPACE}", job=JOB, page_size=20)
        )
        for run in reversed(reply.runs):
            if run.name in shown or run.state not in FINISHED:
                continue
            shown.add(run.name)
            state = executor_pb.RunState.Name(run.state).removeprefix("RUN_STATE_").lower()
            print(
                f"[example] run {run.name.rsplit('/', 1)[1]} of {run.job.rsplit('/', 1)[1]} "
                f"v{run.job_version}: {state} ({run.summary or run.failure.message})",
                flush=True,
            )
            await _show_journal(journal, run)
        await asyncio.sleep(0.5)


_WHOLE_LIFE = {"scheduler.schedule.fired", "executor.run.succeeded", "queue.work_order.succeeded"}


async def _show_journal(journal: events_grpc.JournalServiceAsyncStub, run: executor_pb.Run) -> None:
    """The order's life as the journal recorded it, from every service's outbox."""
    types: list[str] = []
    for _ in range(50):  # relays deliver within milliseconds; allow a few seconds
        response = await journal.ReadJournal(
            events_rpc.ReadJournalRequest(
                filter=events_rpc.JournalFilter(correlation_id=run.correlation_id)
            )
        )
        records = sorted(response.records, key=lambda r: (r.time.ToDatetime(), r.position))
        types = [record.type for record in records]
        # The run's success is recorded before its order is completed: wait for both.
        if set(types) >= _WHOLE_LIFE or "executor.run.failed" in types:
            break
        await asyncio.sleep(0.1)
    print(f"[example] journal of {run.correlation_id}: {' -> '.join(types)}", flush=True)
