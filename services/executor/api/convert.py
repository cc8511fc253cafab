"""Domain types <-> conveyor.executor.v1 messages."""

from __future__ import annotations

from typing import Any, cast

from google.protobuf import struct_pb2

from conveyor.common.v1 import types_pb2
from conveyor.executor.v1 import messages_pb2 as pb
from conveyor_core.protoconv import ts
from conveyor_executor.domain.failure import ClassifiedError
from conveyor_executor.domain.model import (
    Attempt,
    JobUsage,
    Output,
    Progress,
    Run,
    RunKind,
    RunState,
    StepRecord,
    Usage,
)
from conveyor_executor.watch import RunUpdate

STATE_TO_PB = {
    RunState.PENDING: pb.RUN_STATE_PENDING,
    RunState.RUNNING: pb.RUN_STATE_RUNNING,
    RunState.SUCCEEDED: pb.RUN_STATE_SUCCEEDED,
    RunState.FAILED: pb.RUN_STATE_FAILED,
    RunState.ABORTED: pb.RUN_STATE_ABORTED,
}
STATE_FROM_PB = {v: k for k, v in STATE_TO_PB.items()}
KIND_TO_PB = {
    RunKind.HTTP: pb.RUN_KIND_HTTP,
    RunKind.COMMAND: pb.RUN_KIND_COMMAND,
    RunKind.WORKFLOW: pb.RUN_KIND_WORKFLOW,
    RunKind.TASK: pb.RUN_KIND_TASK,
    RunKind.UNKNOWN: pb.RUN_KIND_UNSPECIFIED,
}


def failure_to_pb(error: ClassifiedError | None) -> types_pb2.Failure | None:
    if error is None:
        return None
    return types_pb2.Failure(
        type=error.type.value,
        message=error.message,
        retryable=error.retryable,
        details={str(k): str(v) for k, v in error.details.items()},
    )


def usage_to_pb(usage: Usage) -> pb.Usage:
    return pb.Usage(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cost_usd=usage.cost_usd,
    )


def progress_to_pb(progress: Progress | None) -> pb.RunProgress | None:
    if progress is None:
        return None
    return pb.RunProgress(
        percent=progress.percent, message=progress.message, update_time=ts(progress.at)
    )


def attempt_to_pb(attempt: Attempt) -> pb.Attempt:
    return pb.Attempt(
        number=attempt.number,
        executor=attempt.executor,
        state=STATE_TO_PB[attempt.state],
        start_time=ts(attempt.started_at),
        end_time=ts(attempt.ended_at),
        failure=failure_to_pb(attempt.error),
        summary=attempt.summary,
    )


def run_to_pb(run: Run) -> pb.Run:
    origin = run.origin
    return pb.Run(
        name=run.ref.name,
        kind=KIND_TO_PB[origin.kind],
        state=STATE_TO_PB[run.state],
        work_order=origin.work_order,
        job=origin.job,
        job_version=origin.job_version,
        schedule=origin.schedule,
        slot_time=ts(origin.slot_time),
        fire_id=origin.fire_id,
        create_time=ts(run.created_at),
        start_time=ts(run.started_at),
        end_time=ts(run.ended_at),
        update_time=ts(run.updated_at),
        attempts=[attempt_to_pb(a) for a in run.attempts],
        failure=failure_to_pb(run.error),
        work_found=run.work_found,
        summary=run.summary,
        usage=usage_to_pb(run.usage),
        progress=progress_to_pb(run.progress),
        correlation_id=origin.correlation_id,
        trace_id=origin.trace_id,
    )


def step_to_pb(step: StepRecord) -> pb.RunStep:
    attributes = struct_pb2.Struct()
    attributes.update(cast(dict[str, Any], _struct_safe(dict(step.attributes))))
    return pb.RunStep(
        name=f"{step.run.name}/steps/{step.seq}",
        attempt=step.attempt,
        kind=step.kind,
        display_name=step.name,
        status=step.status,
        start_time=ts(step.started_at),
        end_time=ts(step.finished_at),
        attributes=attributes,
        failure=failure_to_pb(step.error),
    )


def _struct_safe(value: object) -> object:
    """JSON values a Struct accepts (ints become floats, anything else a string)."""
    if isinstance(value, dict):
        return {str(k): _struct_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_struct_safe(v) for v in value]
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int | float):
        return float(value)
    return str(value)


def output_to_pb(output: Output) -> pb.Output:
    return pb.Output(
        name=output.ref.name,
        display_name=output.name,
        data=output.data,
        truncated=output.truncated,
        size_bytes=output.size,
        create_time=ts(output.created_at),
    )


def job_usage_to_pb(usage: JobUsage) -> pb.JobUsage:
    return pb.JobUsage(job=usage.job, run_count=usage.run_count, usage=usage_to_pb(usage.usage))


def update_to_pb(update: RunUpdate) -> pb.RunUpdate:
    if update.run is not None:
        return pb.RunUpdate(run=run_to_pb(update.run))
    if update.progress is not None:
        return pb.RunUpdate(progress=progress_to_pb(update.progress))
    assert update.step is not None
    return pb.RunUpdate(step=step_to_pb(update.step))
