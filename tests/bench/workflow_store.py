"""The executor's share of a consumer run, alone: WorkflowStore's checkpoints in one process.

    python -m tests.bench.workflow_store [--runs 300] [--batch 100] [--stores sqlite,postgres]

Drives --runs consumer runs through the checkpoints the phase driver writes for a
run that commits (docs/workflows.md: create+PREPARING, PREPARED with --batch held
events, MUTATING with the IN_FLIGHT mutation, MUTATED+EMITTING with the APPLIED
one, COMMITTED; their journal records), one run at a time as a session does, on
a fresh executor database (SQLite file in WAL, or a scratch PostgreSQL database).
Prints this process's CPU (user+system) per run, the wall time per run, and, on
PostgreSQL, the CPU of the server backends of the scratch database per run. No
event store, no gRPC: the per-call and per-event cost of the store itself, which
the whole-platform bench (tests.bench.workflow_consumer) cannot separate from the
machine's noise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from conveyor_core import db, migrations
from conveyor_core.clock import SystemClock
from conveyor_core.settings import CoreSettings
from conveyor_executor.domain.model import Usage
from conveyor_executor.domain.workflow import (
    Emit,
    HandlerKind,
    HandlerRun,
    HeldEvent,
    Mutation,
    MutationState,
    Phase,
    sources_of,
)
from conveyor_executor.migrations import MIGRATIONS
from conveyor_executor.store.base import JournalDraft
from conveyor_executor.store.workflow_base import Advance
from conveyor_executor.store.workflow_sql import SqlWorkflowStore
from tests.bench.cpu import machine_busy
from tests.bench.environment import ScratchDatabase, admin_url

NS = "storebench"
PAYLOAD = {"amount": 42, "customer": "bench"}


def _journal(clock: SystemClock, run: HandlerRun, kind: str) -> JournalDraft:
    subjects = {"workflow": run.workflow, "handler": run.handler, "handler_run": run.handler_run_id}
    return JournalDraft(kind, NS, clock.now(), {**subjects, "session": "s1"}, "corr", "trace")


async def one_run(store: SqlWorkflowStore, clock: SystemClock, batch: int, first: int) -> None:
    now = clock.now()
    new = HandlerRun(
        NS, uuid.uuid4().hex, "s1", "wf", "no_op", HandlerKind.CONSUMER, Phase.PREPARING,
        "wf-sessions", "bench", now, now, topic="bench",
    )  # fmt: skip
    j = [_journal(clock, new, f"workflow.handler_run.{p}") for p in ("pending", "preparing")]
    run = await store.handler_run_create(new, tuple(j))

    async def advance(
        run: HandlerRun,
        phase: Phase,
        mutation: Mutation | None = None,
        passed: tuple[Phase, ...] = (),
        **changes: Any,
    ) -> HandlerRun:
        kinds = [phase, *passed]
        journal = [_journal(clock, run, f"workflow.handler_run.{p.value.lower()}") for p in kinds]
        if mutation is not None:
            journal.append(_journal(clock, run, f"workflow.mutation.{mutation.state.value}"))
        changes.setdefault("session_id", "s1")
        changes.setdefault("code_version", "bench")
        return await store.handler_run_advance(
            Advance(
                NS,
                run.handler_run_id,
                sources_of(passed[0] if passed else phase),
                phase,
                clock.now(),
                changes,
                mutation,
                tuple(journal),
                revision=run.revision,
                base=run,
            )
        )

    held = tuple(
        HeldEvent("bench", first + i, f"e-{first + i}", f"event {first + i}", PAYLOAD)
        for i in range(batch)
    )
    prepared = {"events": batch, "seen": first}
    run = await advance(
        run, Phase.PREPARED, events=held, prepared=prepared, state_version=1, usage=Usage()
    )
    now = clock.now()
    in_flight = Mutation(
        NS, run.handler_run_id, "wf", "no_op", MutationState.IN_FLIGHT, 1, now, now
    )
    run = await advance(run, Phase.MUTATING, mutation=in_flight)
    applied = Mutation(
        NS, run.handler_run_id, "wf", "no_op", MutationState.APPLIED, 1, now, clock.now(),
        result=None, ended_at=clock.now(),
    )  # fmt: skip
    emit = Emit(False, {"seen": first + batch}, ())
    run = await advance(
        run,
        Phase.EMITTING,
        mutation=applied,
        passed=(Phase.MUTATED,),
        mutation_result={"kind": "applied", "value": None},
        emit=emit,
        usage=Usage(),
    )
    await advance(run, Phase.COMMITTED, state_version=2, events_published=0)


async def _backend_cpu(url: str, name: str) -> float:
    """CPU seconds used so far by the PostgreSQL backends connected to database `name`."""
    import asyncpg

    from tests.bench.cpu import _proc_cpu

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
    try:
        pids = [
            r[0]
            for r in await conn.fetch("SELECT pid FROM pg_stat_activity WHERE datname=$1", name)
        ]
    finally:
        await conn.close()
    return sum(cpu[1] for pid in pids if (cpu := _proc_cpu(pid)) is not None)


async def run_store(store_name: str, runs: int, batch: int) -> dict[str, Any]:
    database: ScratchDatabase | None = None
    with tempfile.TemporaryDirectory() as scratch:
        if store_name == "postgres":
            database = ScratchDatabase(admin_url(), name=f"conveyor_bench_store_{os.getpid()}")
            await database.create()
            core = CoreSettings(database_url=database.url, data_dir=Path(scratch))
        else:
            core = CoreSettings(data_dir=Path(scratch))
        engine = db.create_engine(core.database_url_for("executor"), core)
        try:
            await migrations.ensure_schema(engine, MIGRATIONS, apply=True)
            store, clock = SqlWorkflowStore(engine), SystemClock()
            for i in range(20):  # warm: connections, prepared statements, caches
                await one_run(store, clock, batch, -batch * (i + 1))
            busy0, wall0, cpu0 = machine_busy(), time.perf_counter(), time.process_time()
            pg0 = await _backend_cpu(admin_url(), database.name) if database else 0.0
            for i in range(runs):
                await one_run(store, clock, batch, i * batch)
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            pg = (await _backend_cpu(admin_url(), database.name) - pg0) if database else 0.0
            busy = machine_busy() - busy0
        finally:
            await engine.dispose()
            if database is not None:
                await database.drop()
    return {
        "store": store_name,
        "runs": runs,
        "batch": batch,
        "client_cpu_ms_per_run": round(1000 * cpu / runs, 2),
        "postgres_cpu_ms_per_run": round(1000 * pg / runs, 2),
        "wall_ms_per_run": round(1000 * wall / runs, 2),
        "machine_busy_percent": round(100 * busy / wall),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--stores", default="sqlite,postgres")
    args = parser.parse_args(argv)
    for name in args.stores.split(","):
        print(json.dumps(asyncio.run(run_store(name, args.runs, args.batch))), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
