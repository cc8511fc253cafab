"""Rows <-> domain types of the executor's tables."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import RowMapping

from conveyor_core.clock import from_micros, opt_from_micros
from conveyor_executor.domain.failure import ClassifiedError, ErrorType
from conveyor_executor.domain.model import (
    Attempt,
    Output,
    OutputRef,
    Progress,
    Run,
    RunKind,
    RunOrigin,
    RunRef,
    RunState,
    StepRecord,
    Usage,
)


def error_to_json(error: ClassifiedError | None, max_message: int = 4096) -> dict[str, Any] | None:
    if error is None:
        return None
    return {
        "type": error.type.value,
        "message": error.message[:max_message],
        "retryable": error.retryable,
        "details": {str(k): str(v) for k, v in error.details.items()},
    }


def error_from_json(value: Mapping[str, Any] | None) -> ClassifiedError | None:
    if not value:
        return None
    try:
        type_ = ErrorType(value.get("type", "internal"))
    except ValueError:
        type_ = ErrorType.INTERNAL
    return ClassifiedError(
        type_,
        str(value.get("message", "")),
        bool(value.get("retryable", False)),
        dict(value.get("details") or {}),
    )


def attempt_from_row(row: RowMapping | Mapping[str, Any]) -> Attempt:
    return Attempt(
        number=row["number"],
        executor=row["executor"],
        state=RunState(row["state"]),
        started_at=from_micros(row["started_at"]),
        ended_at=opt_from_micros(row["ended_at"]),
        error=error_from_json(row["error"]),
        summary=row["summary"],
    )


def run_from_row(row: RowMapping | Mapping[str, Any], attempts: tuple[Attempt, ...] = ()) -> Run:
    progress = None
    if row["progress_at"] is not None:
        progress = Progress(
            row["progress_percent"] or 0.0,
            row["progress_message"] or "",
            from_micros(row["progress_at"]),
        )
    return Run(
        ref=RunRef(row["namespace"], row["run_id"]),
        origin=RunOrigin(
            work_order=row["work_order"],
            kind=RunKind(row["kind"]),
            job=row["job"],
            job_version=row["job_version"],
            schedule=row["schedule"],
            slot_time=opt_from_micros(row["slot_time"]),
            fire_id=row["fire_id"],
            correlation_id=row["correlation_id"],
            trace_id=row["trace_id"],
        ),
        state=RunState(row["state"]),
        created_at=from_micros(row["created_at"]),
        updated_at=from_micros(row["updated_at"]),
        started_at=opt_from_micros(row["started_at"]),
        ended_at=opt_from_micros(row["ended_at"]),
        attempts=attempts,
        error=error_from_json(row["error"]),
        work_found=bool(row["work_found"]),
        summary=row["summary"],
        usage=Usage(row["input_tokens"], row["output_tokens"], row["cost_usd"]),
        progress=progress,
    )


def step_from_row(row: RowMapping | Mapping[str, Any]) -> StepRecord:
    return StepRecord(
        run=RunRef(row["namespace"], row["run_id"]),
        seq=row["seq"],
        attempt=row["attempt"],
        kind=row["kind"],
        name=row["name"],
        status=row["status"],
        started_at=from_micros(row["started_at"]),
        finished_at=opt_from_micros(row["finished_at"]),
        attributes=dict(row["attributes"] or {}),
        error=error_from_json(row["error"]),
    )


def output_from_row(row: RowMapping | Mapping[str, Any]) -> Output:
    return Output(
        ref=OutputRef(RunRef(row["namespace"], row["run_id"]), row["output_id"]),
        name=row["name"],
        data=bytes(row["data"]),
        truncated=bool(row["truncated"]),
        size=row["size"],
        created_at=from_micros(row["created_at"]),
    )
