"""Scheduler bench: fire lag and fire rate with 10,000 interval schedules due within a minute.

The scheduler runs in this process (its own service object, leader of its own
Redis lease) on the bench database, and submits to the bench's queue server
over gRPC, as in production. Schedules are inserted in bulk (setup is not
measured), their first slots spread evenly over one minute starting a few
seconds ahead. Fire lag is the time the queue's acceptance was recorded
(`scheduler_fires.submitted_at`, set when the relay's batch completes, so an
upper bound) minus the slot time. Every fire has its own trace and correlation
id; the relay sends a pass's fires in BatchSubmitWorkOrders calls, each item
carrying its fire's.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert, select

from conveyor.common.v1 import job_pb2
from conveyor.scheduler.v1 import messages_pb2 as pb
from conveyor_core.clock import from_micros, to_micros
from conveyor_core.coordination import RedisCoordination
from conveyor_core.settings import CoreSettings
from conveyor_scheduler.api.convert import definition_from_pb
from conveyor_scheduler.domain.model import (
    FireOutcome,
    JobRef,
    ScheduleKind,
    SchedulePolicy,
    ScheduleSpec,
)
from conveyor_scheduler.service import SchedulerService
from conveyor_scheduler.settings import SchedulerSettings
from conveyor_scheduler.store import rows
from conveyor_scheduler.store.tables import fires, metadata, schedules

INSERT_CHUNK = 1000


def _percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else 0.0


def _schedule_rows(count: int, first: datetime, spread: timedelta) -> list[dict[str, Any]]:
    out, now_us = [], to_micros(datetime.now(UTC))
    for i in range(count):
        slot = first + spread * i / count
        spec = ScheduleSpec(ScheduleKind.INTERVAL, every=timedelta(minutes=1), anchor=slot)
        out.append(
            {
                "uid": uuid.uuid4(),
                "namespace": "bench",
                "job_id": "job",
                "schedule_id": f"s{i}",
                "kind": spec.kind.value,
                "spec": rows.spec_to_json(spec),
                "policy": rows.policy_to_json(SchedulePolicy()),
                "paused": False,
                "next_slot_at": to_micros(slot),
                "next_fire_at": to_micros(slot),
                "backoff_level": 0,
                "next_endpoints": [],
                "pending_since": None,
                "created_at": now_us,
                "updated_at": now_us,
            }
        )
    return out


async def fire_lag(
    queue_address: str,
    database_url: str,
    redis_url: str,
    redis_prefix: str,
    *,
    count: int = 10_000,
    lead_seconds: float = 5.0,
) -> dict[str, Any]:
    """Run the scenario; return lag percentiles (ms), fires/s and counts."""
    core = CoreSettings(
        database_url=database_url, redis_url=redis_url, redis_key_prefix=redis_prefix
    )
    settings = SchedulerSettings(outcome_poll_seconds=3600, event_poll_seconds=3600)
    coordination = RedisCoordination(redis_url, redis_prefix)
    await coordination.start()
    service = SchedulerService(core, coordination, settings=settings)
    try:
        await service.start()
        async with service.engine_db.begin() as conn:  # a scratch database: start empty
            for table in reversed(metadata.sorted_tables):
                await conn.execute(delete(table))
        job = pb.Job(
            target=job_pb2.JobTarget(
                http=job_pb2.HttpTarget(
                    endpoints=[
                        job_pb2.HttpEndpoint(name="e", method="GET", url="http://127.0.0.1:9/")
                    ]
                )
            )
        )
        await service.engine.create_job(JobRef("bench", "job"), definition_from_pb(job, "bench"))
        first = datetime.now(UTC) + timedelta(seconds=lead_seconds)
        all_rows = _schedule_rows(count, first, timedelta(minutes=1))
        async with service.engine_db.begin() as conn:
            for i in range(0, len(all_rows), INSERT_CHUNK):
                await conn.execute(insert(schedules), all_rows[i : i + INSERT_CHUNK])
        await service.attach_peers({"queue": queue_address})
        return await _measure(service, count, first)
    finally:
        await service.stop()
        await coordination.stop()


async def _measure(service: SchedulerService, expected: int, first: datetime) -> dict[str, Any]:
    deadline = time.monotonic() + 60 + (first - datetime.now(UTC)).total_seconds() + 60
    statement = select(fires.c.slot_at, fires.c.submitted_at).where(
        fires.c.outcome == FireOutcome.SUBMITTED.value
    )
    found: list[Any] = []
    while time.monotonic() < deadline:
        await asyncio.sleep(1.0)
        async with service.engine_db.connect() as conn:
            found = (await conn.execute(statement)).all()
        if len(found) >= expected:
            break
    lags = [(r.submitted_at - r.slot_at) / 1e6 for r in found]
    slots = [from_micros(r.slot_at) for r in found]
    submits = [from_micros(r.submitted_at) for r in found]
    window = (max(submits) - min(slots)).total_seconds() if found else 0.0
    return {
        "schedules": expected,
        "fired": len(found),
        "lag_ms": {
            "p50": round(_percentile(lags, 50) * 1000, 1),
            "p99": round(_percentile(lags, 99) * 1000, 1),
            "max": round(max(lags, default=0) * 1000, 1),
        },
        "fires_per_s": round(len(found) / window, 1) if window else 0.0,
        "window_seconds": round(window, 1),
        "target": "p99 lag < 1000 ms at 10,000 schedules per minute",
        "submit_call_batch_size": service.settings.submit_call_batch_size,
        "ok": len(found) == expected and _percentile(lags, 99) < 1.0,
    }
