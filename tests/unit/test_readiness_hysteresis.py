"""Readiness hysteresis (conveyor_core.health.ReadinessMonitor): one slow or failed check
does not flap it; thresholds in a row do."""

from __future__ import annotations

from conveyor_core.health import ReadinessMonitor, Watched


async def test_thresholds_in_a_row_flip_readiness_and_single_blips_do_not() -> None:
    outcomes: list[bool] = []
    changes: list[tuple[str, bool]] = []

    async def check() -> None:
        if not outcomes.pop(0):
            raise ConnectionError("database unreachable")

    async def set_serving(name: str, serving: bool) -> None:
        changes.append((name, serving))

    monitor = ReadinessMonitor([Watched("queue", ["q.v1.Queue"], check)], set_serving, 1, 1, 3, 2)

    async def run(*results: bool) -> None:
        outcomes.extend(results)
        for _ in results:
            await monitor.check_once()

    await run(False, False, True, False, True)  # blips: never three failures in a row
    assert changes == []
    await run(False, False, False)
    assert changes == [("q.v1.Queue", False)]
    await run(True, False, True)  # one good check is not enough to come back
    assert changes == [("q.v1.Queue", False)]
    await run(True)
    assert changes == [("q.v1.Queue", False), ("q.v1.Queue", True)]
