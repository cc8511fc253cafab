"""Proto <-> domain conversion for the scheduler API."""

from __future__ import annotations

from datetime import timedelta

from conveyor.scheduler.v1 import messages_pb2 as pb
from conveyor_core.protoconv import dur, opt_dur, opt_ts, ts
from conveyor_scheduler.domain.model import (
    AdaptiveConfig,
    AdaptiveMode,
    CatchUpMode,
    Endpoint,
    Fire,
    FireKind,
    FireOutcome,
    Job,
    JobDefinition,
    OverlapPolicy,
    PolicyDecision,
    Schedule,
    ScheduleKind,
    SchedulePolicy,
    ScheduleSpec,
)

OVERLAP = {
    pb.OVERLAP_POLICY_UNSPECIFIED: OverlapPolicy.SKIP,
    pb.OVERLAP_POLICY_SKIP: OverlapPolicy.SKIP,
    pb.OVERLAP_POLICY_BUFFER_ONE: OverlapPolicy.BUFFER_ONE,
    pb.OVERLAP_POLICY_BUFFER_ALL: OverlapPolicy.BUFFER_ALL,
    pb.OVERLAP_POLICY_CANCEL_OTHER: OverlapPolicy.CANCEL_OTHER,
    pb.OVERLAP_POLICY_ALLOW_ALL: OverlapPolicy.ALLOW_ALL,
}
OVERLAP_PB = {v: k for k, v in OVERLAP.items() if k != pb.OVERLAP_POLICY_UNSPECIFIED}
CATCH_UP = {
    pb.CATCH_UP_MODE_UNSPECIFIED: CatchUpMode.FIRE_ONCE,
    pb.CATCH_UP_MODE_FIRE_ONCE: CatchUpMode.FIRE_ONCE,
    pb.CATCH_UP_MODE_FIRE_ALL: CatchUpMode.FIRE_ALL,
}
CATCH_UP_PB = {v: k for k, v in CATCH_UP.items() if k != pb.CATCH_UP_MODE_UNSPECIFIED}
FIRE_KIND_PB = {
    FireKind.SCHEDULED: pb.FIRE_KIND_SCHEDULED,
    FireKind.TRIGGERED: pb.FIRE_KIND_TRIGGERED,
    FireKind.BACKFILL: pb.FIRE_KIND_BACKFILL,
}
OUTCOME_PB = {o: getattr(pb, f"FIRE_OUTCOME_{o.name}") for o in FireOutcome}


def definition_from_pb(job: pb.Job, default_queue: str) -> JobDefinition:
    """The stored definition: the message without name, version and times."""
    document = pb.Job()
    document.CopyFrom(job)
    for field in ("name", "version", "create_time", "update_time"):
        document.ClearField(field)
    if not document.queue:
        document.queue = default_queue
    policy = job.adaptive_policy
    adaptive = AdaptiveConfig(
        mode=AdaptiveMode.BACKOFF
        if policy.mode == pb.ADAPTIVE_MODE_BACKOFF
        else AdaptiveMode.FIXED,
        multiplier=policy.multiplier or None,
        max_interval=opt_dur(policy, "max_interval"),
        advisor_enabled=policy.advisor_enabled,
    )
    endpoints: tuple[Endpoint, ...] = ()
    if job.target.WhichOneof("kind") == "http":
        endpoints = tuple(Endpoint(e.name, tuple(e.depends_on)) for e in job.target.http.endpoints)
    return JobDefinition(
        document.SerializeToString(deterministic=True),
        document.queue,
        document.priority,
        adaptive,
        endpoints,
    )


def job_to_pb(job: Job) -> pb.Job:
    message = pb.Job.FromString(job.definition.document)
    message.name = job.ref.name
    message.version = job.version
    message.create_time.CopyFrom(ts(job.created_at))
    message.update_time.CopyFrom(ts(job.updated_at))
    return message


def spec_from_pb(schedule: pb.Schedule) -> ScheduleSpec:
    kind = schedule.WhichOneof("spec")
    if kind == "interval":
        return ScheduleSpec(
            ScheduleKind.INTERVAL,
            every=schedule.interval.every.ToTimedelta(),
            anchor=opt_ts(schedule.interval, "anchor_time"),
        )
    if kind == "cron":
        return ScheduleSpec(
            ScheduleKind.CRON,
            cron=schedule.cron.expression,
            time_zone=schedule.cron.time_zone or "UTC",
        )
    if kind == "one_off":
        return ScheduleSpec(ScheduleKind.ONE_OFF, fire_at=opt_ts(schedule.one_off, "fire_time"))
    return ScheduleSpec(
        ScheduleKind.EVENT,
        topic=schedule.on_event.topic,
        debounce=schedule.on_event.debounce.ToTimedelta(),
    )


def policy_from_pb(schedule: pb.Schedule, default_window: float) -> SchedulePolicy:
    window = opt_dur(schedule, "catch_up_window")
    return SchedulePolicy(
        overlap=OVERLAP.get(schedule.overlap_policy, OverlapPolicy.SKIP),
        catch_up=CATCH_UP.get(schedule.catch_up_mode, CatchUpMode.FIRE_ONCE),
        catch_up_window=window if window is not None else timedelta(seconds=default_window),
        jitter=schedule.jitter.ToTimedelta(),
    )


def schedule_to_pb(schedule: Schedule) -> pb.Schedule:
    spec, policy = schedule.spec, schedule.policy
    message = pb.Schedule(
        name=schedule.ref.name,
        uid=str(schedule.uid),
        overlap_policy=OVERLAP_PB[policy.overlap],
        catch_up_mode=CATCH_UP_PB[policy.catch_up],
        catch_up_window=dur(policy.catch_up_window),
        jitter=dur(policy.jitter),
        paused=schedule.paused,
        next_fire_time=ts(schedule.next_fire_at),
        backoff_level=schedule.backoff_level,
        create_time=ts(schedule.created_at),
        update_time=ts(schedule.updated_at),
    )
    if spec.kind is ScheduleKind.INTERVAL:
        assert spec.every is not None and spec.anchor is not None  # an interval has both
        message.interval.every.CopyFrom(dur(spec.every))
        message.interval.anchor_time.CopyFrom(ts(spec.anchor))
    elif spec.kind is ScheduleKind.CRON:
        message.cron.expression = spec.cron
        message.cron.time_zone = spec.time_zone
    elif spec.kind is ScheduleKind.ONE_OFF:
        assert spec.fire_at is not None  # a one-off has its time
        message.one_off.fire_time.CopyFrom(ts(spec.fire_at))
    else:
        message.on_event.topic = spec.topic
        message.on_event.debounce.CopyFrom(dur(spec.debounce))
    return message


def fire_to_pb(fire: Fire) -> pb.Fire:
    return pb.Fire(
        name=f"{fire.schedule.name}/fires/{fire.id}",
        kind=FIRE_KIND_PB[fire.kind],
        outcome=OUTCOME_PB[fire.outcome],
        slot_time=ts(fire.slot_at),
        fire_time=ts(fire.fired_at),
        submit_time=ts(fire.submitted_at),
        job_version=fire.job_version,
        work_order=fire.work_order,
        work_found=bool(fire.work_found),
        reason=fire.reason,
        error_type=fire.error_type,
        endpoints=list(fire.endpoints),
        correlation_id=fire.correlation_id,
    )


def decision_to_pb(decision: PolicyDecision) -> pb.PolicyDecision:
    schedule = decision.schedule.name
    return pb.PolicyDecision(
        name=f"{schedule}/decisions/{decision.seq}",
        policy=decision.policy,
        fire=f"{schedule}/fires/{decision.fire_id}" if decision.fire_id else "",
        next_fire_time=ts(decision.next_fire_at),
        backoff_level=decision.backoff_level,
        reason=decision.reason,
        endpoints=list(decision.endpoints),
        classifications=list(decision.classifications),
        repair_attempts=decision.repair_attempts,
        salvaged=decision.salvaged,
        input_tokens=decision.input_tokens,
        output_tokens=decision.output_tokens,
        fallback_reason=decision.fallback_reason,
        create_time=ts(decision.created_at),
    )
