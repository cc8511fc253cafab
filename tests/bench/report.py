"""The readable table and the machine facts that go with the figures."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

#: "Other" CPU (percent of one core) above which a window counts as disturbed.
DISTURBED_PERCENT = 15.0

TARGETS = {
    "drain_orders_per_s": 2000.0,  # at least, durably on PostgreSQL
    "latency_p99_ms": 20.0,  # at most, at 200 orders/s
    "publish_batch_events_per_s": 10_000.0,  # at least, batches of 100
    "subscribe_lag_p99_ms": 50.0,  # at most, 10 live journal subscribers
}


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["memory_gib"] = round(int(line.split()[1]) / 1024 / 1024, 1)
                break
    except OSError:
        pass
    info["packages"] = {}
    for package in ("grpcio", "protobuf", "sqlalchemy", "asyncpg", "redis", "opentelemetry-sdk"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            info["packages"][package] = metadata.version(package)
    return info


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=5,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return ""


def _cpu(result: dict[str, Any]) -> str:
    cpu = result.get("cpu_percent")
    if not cpu:
        return ""
    return (
        f"{cpu['server']:>4.0f} {cpu['postgres']:>4.0f} {cpu['redis']:>4.0f} "
        f"{cpu['bench_client']:>4.0f} {cpu.get('other', 0):>4.0f}"
    )


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def _per_order(result: dict[str, Any]) -> str:
    value = result.get("server_cpu_ms_per_order")
    return "" if value is None else f"{value:.2f}"


def rows(results: dict[str, Any]) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    scenarios = results["scenarios"]
    if "submit_single" in scenarios:
        r = scenarios["submit_single"]
        out.append(
            (
                f"a. submit, single ({r['concurrency']} in flight)",
                f"{r['orders_per_s']:,.0f} orders/s",
                f"rpc p50 {r['rpc_ms']['p50']} ms, p99 {r['rpc_ms']['p99']} ms",
                _per_order(r),
                _cpu(r),
            )
        )
    for name, r in scenarios.items():
        if name.startswith("submit_batch_"):
            out.append(
                (
                    f"b. submit, batch {r['batch']} ({r['concurrency']} in flight)",
                    f"{r['orders_per_s']:,.0f} orders/s",
                    f"{r['orders']:,} orders in {r['seconds']:.2f} s",
                    _per_order(r),
                    _cpu(r),
                )
            )
    if "drain" in scenarios:
        r = scenarios["drain"]
        ok = r["verified"]["ok"] and r["verified"]["client_distinct_ok"]
        target = TARGETS["drain_orders_per_s"]
        out.append(
            (
                f"c. drain {r['orders']:,} (lease<={r['max_batch']}, {r['loops']} loops)",
                f"{r['orders_per_s']:,.0f} orders/s",
                f"target >= {target:,.0f}: {_verdict(r['orders_per_s'] >= target)}; "
                f"verified: {'yes' if ok else 'NO'}",
                _per_order(r),
                _cpu(r),
            )
        )
    for name, r in scenarios.items():
        if not name.startswith("latency"):
            continue
        lat = r["latency_ms"]
        target = TARGETS["latency_p99_ms"]
        verdict = (
            f"target p99 < {target:.0f} ms: {_verdict(lat['p99'] < target)}"
            if name == "latency"
            else "for comparison (no target)"
        )
        out.append(
            (
                f"d. submit->lease @{r['rate']:.0f}/s, {r['seconds']:.0f} s",
                f"p50 {lat['p50']} p90 {lat['p90']} p99 {lat['p99']} max {lat['max']} ms",
                f"{verdict}; submit rpc p50 {r['submit_rpc_ms']['p50']} ms",
                _per_order(r),
                _cpu(r),
            )
        )
    if "scheduler" in scenarios:  # tests/bench/scheduler.py
        r = scenarios["scheduler"]
        lag = r["lag_ms"]
        out.append(
            (
                f"s. scheduler, {r['schedules']:,} schedules/min",
                f"lag p50 {lag['p50']} p99 {lag['p99']} max {lag['max']} ms",
                f"p99 < 1000 ms: {_verdict(r['ok'])}; fired {r['fired']:,}, {r['fires_per_s']}/s",
                "",
                _cpu(r),
            )
        )
    return out


def _per_event(result: dict[str, Any]) -> str:
    value = result.get("server_cpu_ms_per_event")
    return "" if value is None else f"{value:.3f}"


def _verified(result: dict[str, Any]) -> str:
    return "verified: " + ("yes" if result["verified"]["ok"] else "NO")


def event_rows(results: dict[str, Any]) -> list[tuple[str, ...]]:
    """Rows of the event-store scenarios (tests/bench/events.py, events_lag.py)."""
    out: list[tuple[str, ...]] = []
    scenarios = results["scenarios"]
    if "publish_batch" in scenarios:
        r = scenarios["publish_batch"]
        target = TARGETS["publish_batch_events_per_s"]
        out.append(
            (
                f"e. publish, batch {r['batch']} ({r['concurrency']} in flight)",
                f"{r['events_per_s']:,.0f} events/s",
                f"target >= {target:,.0f}: {_verdict(r['events_per_s'] >= target)}; "
                f"rpc p50 {r['rpc_ms']['p50']} ms; {_verified(r)}",
                _per_event(r),
                _cpu(r),
            )
        )
    if "publish_single" in scenarios:
        r = scenarios["publish_single"]
        out.append(
            (
                f"f. publish, single ({r['concurrency']} in flight)",
                f"{r['events_per_s']:,.0f} events/s",
                f"rpc p50 {r['rpc_ms']['p50']} ms, p99 {r['rpc_ms']['p99']} ms; {_verified(r)}",
                _per_event(r),
                _cpu(r),
            )
        )
    if "reserve_commit" in scenarios:
        r = scenarios["reserve_commit"]
        out.append(
            (
                f"g. reserve<={r['max_events']} + commit, {r['events']:,} "
                f"({r['consumers']} consumers)",
                f"{r['events_per_s']:,.0f} events/s",
                f"reserve p50 {r['reserve_rpc_ms']['p50']} ms, commit p50 "
                f"{r['commit_rpc_ms']['p50']} ms; {_verified(r)}",
                _per_event(r),
                _cpu(r),
            )
        )
    if "subscribe_lag" in scenarios:
        r = scenarios["subscribe_lag"]
        lag = r["lag_ms"]
        target = TARGETS["subscribe_lag_p99_ms"]
        worst = max((p.get("p99", 0) for p in r["per_subscriber"]), default=0)
        out.append(
            (
                f"h. journal lag, {r['subscribers']} subscribers @{r['rate']:.0f}/s",
                f"p50 {lag.get('p50')} p99 {lag.get('p99')} max {lag.get('max')} ms",
                f"target p99 < {target:.0f} ms: {_verdict(lag.get('p99', 1e9) < target)}; "
                f"worst subscriber p99 {worst} ms; append p50 {r['append_rpc_ms'].get('p50')} "
                f"ms; {_verified(r)}",
                _per_event(r),
                _cpu(r),
            )
        )
    return out


def _e2e_cpu(result: dict[str, Any]) -> str:
    cpu = result.get("cpu_percent")
    if not cpu:
        return ""
    names = ("executor", "queue", "scheduler", "events", "http", "postgres", "redis")
    names += ("bench_client", "other")
    return " ".join(f"{cpu.get(n, 0):>4.0f}" for n in names)


def e2e_rows(results: dict[str, Any]) -> list[tuple[str, ...]]:
    """Rows of the end-to-end suite (tests/bench/e2e.py)."""
    out: list[tuple[str, ...]] = []
    scenarios = results["scenarios"]
    if "e2e_throughput" in scenarios:
        r = scenarios["e2e_throughput"]
        out.append(
            (
                f"no-op HTTP jobs, {r['orders']:,} orders",
                f"{r['orders_per_s']:,.0f} orders/s",
                f"run p50 {r['run_ms'].get('p50')} ms; concurrency "
                f"{r['executor_settings']['CONVEYOR_EXECUTOR_CONCURRENCY']}",
                _verified(r),
                _e2e_cpu(r),
            )
        )
    if "e2e_slot_latency" in scenarios:
        r = scenarios["e2e_slot_latency"]
        lat = r["latency_ms"]
        out.append(
            (
                f"slot -> run start, {r['schedules']} schedules / {r['every_seconds']:g} s",
                f"p50 {lat.get('p50')} ms, p99 {lat.get('p99')} ms",
                f"max {lat.get('max')} ms, {r['runs']} runs in {r['window_seconds']:g} s",
                _verified(r),
                _e2e_cpu(r),
            )
        )
    return out


def _grid(header: tuple[str, ...], body: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(header))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)) for row in body]
    return lines


def table(results: dict[str, Any]) -> str:
    cpu_header = "CPU% srv   pg  rds  cli  oth"
    lines = []
    queue_rows = rows(results)
    if queue_rows:
        lines += _grid(("scenario", "result", "notes", "srv ms/order", cpu_header), queue_rows)
    events = event_rows(results)
    if events:
        if lines:
            lines.append("")
        lines += _grid(("event store", "result", "notes", "srv ms/event", cpu_header), events)
    end_to_end = e2e_rows(results)
    if end_to_end:
        if lines:
            lines.append("")
        lines += _grid(
            (
                "end to end",
                "result",
                "notes",
                "verified",
                "CPU% exe  que  sch  evt http   pg  rds  cli  oth",
            ),
            end_to_end,
        )
    machine = results["machine"]
    lines.append("")
    postgres = results.get("postgres", {})
    lines.append(
        f"{results['date']}  {machine['nproc']} cores ({machine.get('cpu_model', '?')}), "
        f"Python {machine['python']}, PostgreSQL {postgres.get('version')} "
        f"(synchronous_commit={postgres.get('synchronous_commit')})"
    )
    lines.append(
        "srv ms/order, ms/event = server CPU time per order (queue) or event/record "
        "(event store) over the measured window."
    )
    lines.append(
        "CPU% = percent of one core (200 = both of 2 cores) used by the server under test, "
        "PostgreSQL (bench database),\nRedis, this bench client, and everything else "
        "(oth: other processes; high means the figures are disturbed)."
    )
    disturbed = {
        name: r["cpu_percent"]["other"]
        for name, r in results["scenarios"].items()
        if r.get("cpu_percent", {}).get("other", 0) > DISTURBED_PERCENT
    }
    if disturbed:
        lines.append(
            "WARNING: other processes were busy during "
            + ", ".join(f"{name} ({value:.0f}% of a core)" for name, value in disturbed.items())
            + ": those figures understate the service; run again on a quiet machine."
        )
    return "\n".join(lines)
