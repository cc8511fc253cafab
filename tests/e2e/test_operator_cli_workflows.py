"""The operator CLI's workflow commands: workflows, sessions, blocked runs, `resolve` and
the mutation ledger; the real `conveyor` binary against a real platform with tokens on
(embedded and PostgreSQL + Redis), hosting tests.helpers.workflow_app on the fake shop."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conveyor_core.fake_shop import FakeShop
from conveyor_core.runtime import Platform
from conveyor_core.settings import CoreSettings
from tests.helpers import workflow_app
from tests.helpers.cli import Result, cli_environment, conveyor
from tests.helpers.e2e import eventually
from tests.helpers.security import Principals

NAMESPACE = "wf"


@dataclass
class Shop:
    address: str
    operator: str
    viewer: str
    shop: FakeShop

    async def run(self, *args: str, token: str | None = None) -> Result:
        env = cli_environment(
            self.address, CONVEYOR_NAMESPACE=NAMESPACE, CONVEYOR_TOKEN=token or self.operator
        )
        return await conveyor(self.address, *args, env=env)

    async def json(self, *args: str, token: str | None = None) -> Any:
        return (await self.run("-o", "json", *args, token=token)).json()


@pytest.fixture
def fake_shop(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeShop]:
    shop = FakeShop().start()
    monkeypatch.setenv("CONVEYOR_EXAMPLE_SHOP_URL", shop.url)
    yield shop
    shop.stop()


@pytest.fixture
async def platform(
    core: CoreSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_shop: FakeShop
) -> AsyncIterator[Shop]:
    for name, value in {
        "CONVEYOR_EXECUTOR_WORKSPACE_ROOT": str(tmp_path / "ws"),
        "CONVEYOR_EXECUTOR_LEASE_WAIT_SECONDS": "0.2",
        "CONVEYOR_EXECUTOR_HEARTBEAT_INTERVAL_SECONDS": "0.2",
        "CONVEYOR_SCHEDULER_TICK_SECONDS": "0.1",
        "CONVEYOR_SCHEDULER_RELAY_POLL_SECONDS": "0.1",
        "CONVEYOR_QUEUE_RELAY_POLL_SECONDS": "0.1",
        "CONVEYOR_EXECUTOR_RELAY_POLL_SECONDS": "0.1",
    }.items():
        monkeypatch.setenv(name, value)
    principals = Principals(tmp_path / "principals.json")
    operator = principals.add("ops", [NAMESPACE], ["operator", "viewer"])
    viewer = principals.add("watcher", [NAMESPACE], ["viewer"])
    secured = core.model_copy(update={"auth_tokens_file": str(principals.path)})
    hosting = {"apps": [workflow_app.app], "only_app_queues": True}
    running = Platform(secured, hosting=hosting)
    port = await running.start("127.0.0.1:0")
    try:
        yield Shop(f"127.0.0.1:{port}", operator, viewer, fake_shop)
    finally:
        await running.stop(grace=1)


async def test_blocked_runs_show_their_prompt_and_are_resolved_each_way(platform: Shop) -> None:
    async def registered() -> list[dict[str, Any]] | None:
        found = await platform.json("workflows", "list")
        return found if any(w["name"].endswith("/shop") for w in found) else None

    await eventually(registered, "workflow shop registered by its worker", 60)
    shop = await platform.json("workflows", "get", "shop")
    assert {h["handler"] for h in shop["handlers"]} == {"poll_orders", "charge_order", "notify"}

    # Three charges made, their answers lost, and the lookups fail: nobody can tell.
    orders = [platform.shop.add_order(n, 10, mode="apply_then_cut_unknown") for n in "abc"]
    fired = await platform.json("workflows", "trigger", "shop", "poll_orders")
    assert fired["kind"] == "FIRE_KIND_TRIGGERED"
    nope = await platform.run("workflows", "trigger", "shop", "nope")
    assert nope.code == 3 and "poll_orders" in nope.stderr

    async def three_blocked() -> list[dict[str, Any]] | None:
        runs = await platform.json("blocked", "list", "--workflow", "shop")
        return runs if len(runs) == 3 else None

    blocked = await eventually(three_blocked, "three suspended charge runs", 90)
    assert all("APPLIED" in r["prompt"] for r in blocked), blocked
    table = await platform.run("blocked", "list")
    assert blocked[0]["name"].rsplit("/", 1)[-1] in table.stdout
    assert "Order" in table.stdout and "PROMPT" in table.stdout
    by_order = {r["events"][0]["title"].split()[1]: r["name"] for r in blocked}
    applied, failed, skipped = (by_order[str(o["id"])] for o in orders)

    missing = await platform.run("resolve", applied, "applied")
    assert missing.code == 2 and "--reason" in missing.stderr
    blank = await platform.run("resolve", applied, "skip", "--reason", " ")
    assert blank.code == 2 and "--reason" in blank.stderr
    denied = await platform.run(
        "resolve", applied, "skip", "--reason", "a viewer tries", token=platform.viewer
    )
    assert denied.code == 6 and "PERMISSION_DENIED" in denied.stderr, denied
    assert "operator" in denied.stderr
    unknown = await platform.run("resolve", "0" * 32, "skip", "--reason", "no such run")
    assert unknown.code == 3 and "NOT_FOUND" in unknown.stderr

    for order in orders:  # the shop answers again: a new charge goes through
        platform.shop.modes[str(order["id"])] = ""
    done = await platform.json(
        "resolve", applied, "applied", "--reason", "seen in the dashboard",
        "--result", '{"charge_id": "ch_manual"}', "--resolved-by", "ops@example.com",
    )  # fmt: skip
    assert done["mutation"]["resolution"] == "RESOLUTION_APPLIED"
    assert done["mutation"]["resolution_reason"] == "seen in the dashboard"
    people = await platform.run("resolve", failed, "failed", "--reason", "no charge in the books")
    assert people.code == 0 and "resolved failed" in people.stdout, people
    assert (await platform.run("resolve", skipped, "skip", "--reason", "refunded")).code == 0

    async def all_committed() -> list[dict[str, Any]] | None:
        runs = await platform.json("workflows", "runs", "shop", "--phase", "committed")
        charges = [r for r in runs if r["handler"] == "charge_order"]
        return charges if len(charges) == 3 else None

    charges = {r["name"]: r for r in await eventually(all_committed, "3 charges committed", 90)}
    assert charges[applied]["mutation_result"]["kind"] == "applied"
    assert json.loads(charges[applied]["mutation_result"]["value_json"]) == {
        "charge_id": "ch_manual"
    }
    assert charges[failed]["mutation_result"]["kind"] == "applied"  # mutated again
    assert charges[skipped]["mutation_result"]["kind"] == "skipped"
    assert len(platform.shop.charges_of(orders[1]["id"])) == 2
    assert await platform.json("blocked", "list") == []

    ledger = await platform.json("mutations", "list", "--workflow", "shop")
    resolved = {m["handler_run"]: m for m in ledger if m["resolution"] != "RESOLUTION_UNSPECIFIED"}
    assert set(resolved) == {applied, failed, skipped}
    # With tokens on, the token's principal is recorded, on behalf of --resolved-by.
    assert resolved[applied]["resolved_by"] == "ops (on behalf of ops@example.com)"
    assert resolved[skipped]["resolution_reason"] == "refunded"
    one = await platform.json("mutations", "list", "--run", skipped.rsplit("/", 1)[-1])
    assert [m["resolution"] for m in one] == ["RESOLUTION_SKIP"]
    detail = await platform.run("workflows", "run", applied)
    assert "seen in the dashboard" in detail.stdout and "ch_manual" in detail.stdout


async def test_workflows_pause_resume_and_sessions_with_budgets(platform: Shop) -> None:
    async def registered() -> dict[str, Any] | None:
        found = await platform.json("workflows", "list")
        return next((w for w in found if w["name"].endswith("/tight")), None)

    await eventually(registered, "workflow tight registered by its worker", 60)
    paused = await platform.json("workflows", "pause", "tight", "--reason", "maintenance")
    assert paused["paused"] is True and paused["pause_reason"] == "maintenance"
    listed = await platform.run("workflows", "list")
    assert "paused" in listed.stdout
    refused = await platform.run("workflows", "resume", "tight", token=platform.viewer)
    assert refused.code == 6
    resumed = await platform.json("workflows", "resume", "tight")
    assert resumed["paused"] is False

    assert (await platform.run("workflows", "trigger", "tight", "burst")).code == 0

    async def chain_done() -> list[dict[str, Any]] | None:
        sessions = await platform.json("sessions", "list", "tight")
        ended = [s for s in sessions if s["state"] != "SESSION_STATE_RUNNING"]
        states = {s["state"] for s in ended}
        done = "SESSION_STATE_COMPLETED_WITH_REMAINING_WORK" in states and any(
            s["state"] == "SESSION_STATE_COMPLETED" and not s["follow_up"] for s in ended
        )
        return sessions if done else None

    sessions = await eventually(chain_done, "the budget-limited session chain ended", 90)
    # (The schedule's first slot may fire at registration too: every chain is bounded.)
    limited = [s for s in sessions if s["state"] == "SESSION_STATE_COMPLETED_WITH_REMAINING_WORK"]
    assert all(s["iterations"] == 2 and s["follow_up"] for s in limited), sessions
    first = limited[-1]
    assert first["usage"]["cost_usd"] == pytest.approx(0.02)
    table = await platform.run("sessions", "list", "tight")
    assert "2/2" in table.stdout, table.stdout  # iterations against the budget
    assert "completed_with_remaining_work" in table.stdout
    got = await platform.run("sessions", "get", first["name"].rsplit("/", 1)[-1])
    assert got.code == 0 and first["follow_up"] in got.stdout and "work" in got.stdout
    assert (await platform.run("sessions", "get", "nope")).code == 3
    assert (await platform.run("workflows", "get", "nope")).code == 3
