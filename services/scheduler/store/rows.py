"""Row <-> domain conversion for the scheduler tables."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from sqlalchemy import RowMapping

from conveyor_core.clock import from_micros, opt_from_micros, opt_to_micros, to_micros
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
    JobRef,
    OverlapPolicy,
    PolicyDecision,
    Schedule,
    ScheduleKind,
    SchedulePolicy,
    ScheduleRef,
    ScheduleSpec,
)


def us(delta: timedelta | None) -> int | None:
    return None if delta is None else delta // timedelta(microseconds=1)


def delta(micros: int | None) -> timedelta | None:
    return None if micros is None else timedelta(microseconds=micros)


def adaptive_to_json(config: AdaptiveConfig) -> dict[str, Any]:
    return {
        "mode": config.mode.value,
        "multiplier": config.multiplier,
        "max_interval_us": us(config.max_interval),
        "advisor": config.advisor_enabled,
    }


def job_from_row(row: RowMapping | Mapping[str, Any], created_at: int, updated_at: int) -> Job:
    adaptive = row["adaptive"]
    definition = JobDefinition(
        document=row["document"],
        queue=row["queue"],
        priority=row["priority"],
        adaptive=AdaptiveConfig(
            mode=AdaptiveMode(adaptive["mode"]),
            multiplier=adaptive["multiplier"],
            max_interval=delta(adaptive["max_interval_us"]),
            advisor_enabled=adaptive["advisor"],
        ),
        endpoints=tuple(Endpoint(e["name"], tuple(e["depends_on"])) for e in row["endpoints"]),
    )
    return Job(
        JobRef(row["namespace"], row["job_id"]),
        row["version"],
        definition,
        from_micros(created_at),
        from_micros(updated_at),
    )


def spec_to_json(spec: ScheduleSpec) -> dict[str, Any]:
    return {
        "every_us": us(spec.every),
        "anchor_us": opt_to_micros(spec.anchor),
        "cron": spec.cron,
        "time_zone": spec.time_zone,
        "fire_at_us": opt_to_micros(spec.fire_at),
        "topic": spec.topic,
        "debounce_us": us(spec.debounce),
    }


def spec_from_json(kind: str, data: Mapping[str, Any]) -> ScheduleSpec:
    return ScheduleSpec(
        kind=ScheduleKind(kind),
        every=delta(data["every_us"]),
        anchor=opt_from_micros(data["anchor_us"]),
        cron=data["cron"],
        time_zone=data["time_zone"],
        fire_at=opt_from_micros(data["fire_at_us"]),
        topic=data["topic"],
        debounce=delta(data["debounce_us"]) or timedelta(0),
    )


def policy_to_json(policy: SchedulePolicy) -> dict[str, Any]:
    return {
        "overlap": policy.overlap.value,
        "catch_up": policy.catch_up.value,
        "window_us": us(policy.catch_up_window),
        "jitter_us": us(policy.jitter),
    }


def policy_from_json(data: Mapping[str, Any]) -> SchedulePolicy:
    return SchedulePolicy(
        overlap=OverlapPolicy(data["overlap"]),
        catch_up=CatchUpMode(data["catch_up"]),
        catch_up_window=timedelta(microseconds=data["window_us"]),
        jitter=timedelta(microseconds=data["jitter_us"]),
    )


def schedule_from_row(row: RowMapping | Mapping[str, Any]) -> Schedule:
    return Schedule(
        uid=row["uid"],
        ref=ScheduleRef(row["namespace"], row["job_id"], row["schedule_id"]),
        spec=spec_from_json(row["kind"], row["spec"]),
        policy=policy_from_json(row["policy"]),
        paused=row["paused"],
        next_slot_at=opt_from_micros(row["next_slot_at"]),
        next_fire_at=opt_from_micros(row["next_fire_at"]),
        backoff_level=row["backoff_level"],
        created_at=from_micros(row["created_at"]),
        updated_at=from_micros(row["updated_at"]),
        next_endpoints=tuple(row["next_endpoints"]),
    )


def fire_to_row(fire: Fire, seq: int) -> dict[str, Any]:
    return {
        "id": fire.id,
        "schedule_uid": fire.schedule_uid,
        "seq": seq,
        "kind": fire.kind.value,
        "outcome": fire.outcome.value,
        "slot_at": to_micros(fire.slot_at),
        "fired_at": to_micros(fire.fired_at),
        "job_version": fire.job_version,
        "submitted_at": opt_to_micros(fire.submitted_at),
        "finished_at": opt_to_micros(fire.finished_at),
        "checked_at": None,
        "work_order": fire.work_order,
        "work_found": fire.work_found,
        "reason": fire.reason,
        "error_type": fire.error_type,
        "endpoints": list(fire.endpoints),
        "correlation_id": fire.correlation_id,
    }


def fire_from_row(row: RowMapping | Mapping[str, Any], ref: ScheduleRef) -> Fire:
    return Fire(
        id=row["id"],
        schedule_uid=row["schedule_uid"],
        schedule=ref,
        kind=FireKind(row["kind"]),
        outcome=FireOutcome(row["outcome"]),
        slot_at=from_micros(row["slot_at"]),
        fired_at=from_micros(row["fired_at"]),
        job_version=row["job_version"],
        submitted_at=opt_from_micros(row["submitted_at"]),
        finished_at=opt_from_micros(row["finished_at"]),
        work_order=row["work_order"],
        work_found=row["work_found"],
        reason=row["reason"],
        error_type=row["error_type"],
        endpoints=tuple(row["endpoints"]),
        correlation_id=row["correlation_id"],
    )


def decision_from_row(row: RowMapping | Mapping[str, Any], ref: ScheduleRef) -> PolicyDecision:
    details = row["details"]
    fire_id = row["fire_id"]
    return PolicyDecision(
        seq=row["seq"],
        schedule=ref,
        policy=row["policy"],
        fire_id=uuid.UUID(str(fire_id)) if fire_id else None,
        next_fire_at=opt_from_micros(row["next_fire_at"]),
        backoff_level=row["backoff_level"],
        reason=row["reason"],
        created_at=from_micros(row["created_at"]),
        endpoints=tuple(details.get("endpoints", ())),
        classifications=tuple(details.get("classifications", ())),
        repair_attempts=details.get("repair_attempts", 0),
        salvaged=details.get("salvaged", False),
        input_tokens=details.get("input_tokens", 0),
        output_tokens=details.get("output_tokens", 0),
        fallback_reason=details.get("fallback_reason") or "",
    )
