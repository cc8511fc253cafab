"""The work order a fire submits: a JobInvocation payload with the job's target at its version.

Job definitions are stored as serialized `conveyor.scheduler.v1.Job` messages
(the shared JobTarget contract inside), so building the order is proto work;
it lives here, next to the API, and the engine passes bytes to the store.
"""

from __future__ import annotations

from conveyor.common.v1 import job_pb2, types_pb2
from conveyor.queue.v1 import messages_pb2 as queue_pb
from conveyor.scheduler.v1 import messages_pb2 as pb
from conveyor_core.protoconv import ts
from conveyor_scheduler.domain import timing
from conveyor_scheduler.domain.model import Fire, Job

JOB_INVOCATION_TYPE = "application/x-protobuf; messageType=conveyor.common.v1.JobInvocation"


def work_order_spec(job: Job, fire: Fire, fencing_token: int) -> tuple[str, bytes]:
    """(queue resource name, serialized WorkOrderSpec) for one fire."""
    definition = pb.Job.FromString(job.definition.document)
    invocation = job_pb2.JobInvocation(
        job=job.ref.name,
        job_version=job.version,
        target=definition.target,
        schedule=fire.schedule.name,
        slot_time=ts(fire.slot_at),
        fire_id=str(fire.id),
        endpoints=list(fire.endpoints),
    )
    labels = {
        "schedule": fire.schedule.name,
        "job": job.ref.name,
        "job_version": str(job.version),
        "fire_id": str(fire.id),
        "fencing_token": str(fencing_token),
    }
    key = timing.idempotency_key(fire.schedule_uid, fire.slot_at)
    return _spec(job, definition, invocation, key, labels)


def run_spec(
    job: Job, endpoints: tuple[str, ...], input_payload: bytes | None, key: str
) -> tuple[str, bytes]:
    """(queue resource name, serialized WorkOrderSpec) of a RunJob: the job now, outside
    its schedules; `input_payload` is a serialized conveyor.common.v1.Payload."""
    definition = pb.Job.FromString(job.definition.document)
    invocation = job_pb2.JobInvocation(
        job=job.ref.name,
        job_version=job.version,
        target=definition.target,
        endpoints=list(endpoints),
    )
    if input_payload is not None:
        invocation.input.ParseFromString(input_payload)
    labels = {"job": job.ref.name, "job_version": str(job.version), "trigger": "run"}
    return _spec(job, definition, invocation, key, labels)


def _spec(
    job: Job,
    definition: pb.Job,
    invocation: job_pb2.JobInvocation,
    key: str,
    labels: dict[str, str],
) -> tuple[str, bytes]:
    spec = queue_pb.WorkOrderSpec(
        priority=definition.priority,
        payload=types_pb2.Payload(
            data=invocation.SerializeToString(), content_type=JOB_INVOCATION_TYPE
        ),
        idempotency_key=key,
        labels=labels,
    )
    if definition.target.HasField("workflow"):
        # One session per workflow at a time: the workflow's queue allows one leased
        # order per key (the executor's registration sets it; docs/workflows.md).
        spec.concurrency_key = f"workflow/{definition.target.workflow.workflow}"
    if definition.HasField("retry_policy"):
        spec.retry_policy.CopyFrom(definition.retry_policy)
    if definition.HasField("start_to_close_timeout"):
        spec.start_to_close_timeout.CopyFrom(definition.start_to_close_timeout)
    queue = f"namespaces/{job.ref.namespace}/queues/{job.definition.queue}"
    return queue, spec.SerializeToString()
