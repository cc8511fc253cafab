"""The console's everyday controls against a real secured platform (embedded SQLite and
PostgreSQL + Redis): pause and resume a queue, a workflow and a schedule, and trigger a
schedule now. Each reads back the state the platform keeps, a viewer is refused by the
platform (403 with its message) with nothing changed, and an unknown name is the
platform's 404."""

from __future__ import annotations

from typing import Any

import httpx

from tests.helpers import scheduler as scheduler_helpers
from tests.helpers.console import NS, ConsolePlatform
from tests.helpers.e2e import eventually

API = f"/api/v1/namespaces/{NS}"
#: Who the platform records for the operator's token acting through the console.
OPERATOR = "oncall (on behalf of console)"


def _error(reply: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert reply.status_code == status, reply.text
    error: dict[str, Any] = reply.json()["error"]
    assert error["status"] == status and error["code"] == code, error
    return error


def _ok(reply: httpx.Response) -> dict[str, Any]:
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    return body


async def test_pausing_a_queue_shows_it_paused_until_resumed(
    console: ConsolePlatform, http: httpx.AsyncClient
) -> None:
    await console.submit("held", {"n": 1})
    path = f"{API}/queues/held"

    async def paused() -> bool:
        queue: dict[str, Any] = _ok(await http.get(path, headers=console.headers("viewer")))
        return bool(queue["queue"]["paused"])

    assert not await paused()
    viewer = await http.post(f"{path}/pause", headers=console.headers("viewer"))
    assert "operator" in _error(viewer, 403, "PERMISSION_DENIED")["message"]
    assert not await paused()  # nothing changed
    done = _ok(await http.post(f"{path}/pause", headers=console.headers()))
    assert done["queue"]["paused"] is True and done["queue"]["id"] == "held"
    assert await paused()
    listed = _ok(await http.get(f"{API}/queues", headers=console.headers("viewer")))
    assert {q["id"]: q["paused"] for q in listed["queues"]}["held"] is True
    # Submits are still accepted while paused: the order waits, QUEUED.
    await console.submit("held", {"n": 2})
    stats = _ok(await http.get(path, headers=console.headers()))["queue"]["stats"]
    assert stats["depth_by_state"]["QUEUED"] == 2
    viewer = await http.post(f"{path}/resume", headers=console.headers("viewer"))
    _error(viewer, 403, "PERMISSION_DENIED")
    assert await paused()
    resumed = _ok(await http.post(f"{path}/resume", headers=console.headers()))
    assert resumed["queue"]["paused"] is False
    assert not await paused()
    # A queue exists as soon as it is named (docs/queue.md), so there is no unknown queue
    # to refuse; a malformed name is the queue service's INVALID_ARGUMENT with its field.
    bad = await http.post(f"{API}/queues/Not.A.Queue/pause", headers=console.headers())
    assert _error(bad, 400, "INVALID_ARGUMENT")["field_violations"][0]["field"] == "name"


async def test_pausing_a_workflow_needs_a_reason_and_records_who_and_why(
    console: ConsolePlatform, http: httpx.AsyncClient
) -> None:
    path = f"{API}/workflows/shop"

    async def workflow() -> dict[str, Any] | None:
        reply = await http.get(path, headers=console.headers("viewer"))
        return reply.json()["workflow"] if reply.status_code == 200 else None  # type: ignore[no-any-return]

    assert (await eventually(workflow, "the shop workflow registered", 30))["paused"] is False
    for body in ({}, {"reason": "  "}):
        missing = await http.post(f"{path}/pause", json=body, headers=console.headers())
        error = _error(missing, 400, "INVALID_ARGUMENT")
        assert error["field_violations"][0]["field"] == "reason"
    viewer = await http.post(
        f"{path}/pause", json={"reason": "not mine"}, headers=console.headers("viewer")
    )
    assert "operator" in _error(viewer, 403, "PERMISSION_DENIED")["message"]
    assert (await workflow() or {})["paused"] is False  # nothing changed
    done = _ok(
        await http.post(
            f"{path}/pause", json={"reason": "shop API down"}, headers=console.headers()
        )
    )
    assert done["workflow"]["paused"] is True
    shown = await workflow() or {}
    assert (shown["paused"], shown["paused_by"], shown["pause_reason"]) == (
        True,
        OPERATOR,
        "shop API down",
    )
    listed = _ok(await http.get(f"{API}/workflows", headers=console.headers("viewer")))
    assert {w["id"]: w["paused"] for w in listed["workflows"]}["shop"] is True
    _error(
        await http.post(f"{path}/resume", headers=console.headers("viewer")),
        403,
        "PERMISSION_DENIED",
    )
    resumed = _ok(await http.post(f"{path}/resume", headers=console.headers()))
    assert resumed["workflow"]["paused"] is False
    assert (await workflow() or {})["paused"] is False
    for action, body in (("pause", {"reason": "x"}), ("resume", None)):
        unknown = await http.post(
            f"{API}/workflows/no-such-workflow/{action}", json=body, headers=console.headers()
        )
        assert "no-such-workflow" in _error(unknown, 404, "NOT_FOUND")["message"], action


async def test_a_schedule_is_paused_resumed_and_triggered_now(
    console: ConsolePlatform, http: httpx.AsyncClient
) -> None:
    # Hourly into a queue nobody leases: any order in it came from this test's actions.
    await console.create_schedule(
        "hourly", scheduler_helpers.http_job(queue="hourly"), scheduler_helpers.interval(3600)
    )
    path = f"{API}/jobs/hourly/schedules/every"

    async def schedule() -> dict[str, Any]:
        return _ok(await http.get(path, headers=console.headers("viewer")))

    assert (await schedule())["schedule"]["paused"] is False
    for action in ("pause", "trigger"):
        viewer = await http.post(f"{path}/{action}", headers=console.headers("viewer"))
        assert "operator" in _error(viewer, 403, "PERMISSION_DENIED")["message"], action
    assert (await schedule())["schedule"]["paused"] is False
    paused = _ok(await http.post(f"{path}/pause", headers=console.headers()))
    assert paused["schedule"]["paused"] is True and paused["schedule"]["id"] == "every"
    assert (await schedule())["schedule"]["paused"] is True
    listed = _ok(await http.get(f"{API}/schedules", headers=console.headers("viewer")))
    assert {s["name"]: s["paused"] for s in listed["schedules"]}[
        f"namespaces/{NS}/jobs/hourly/schedules/every"
    ] is True
    resumed = _ok(await http.post(f"{path}/resume", headers=console.headers()))
    assert resumed["schedule"]["paused"] is False
    assert (await schedule())["schedule"]["paused"] is False
    fire = _ok(await http.post(f"{path}/trigger", headers=console.headers()))["fire"]
    assert fire["kind"] == "TRIGGERED"

    async def submitted() -> dict[str, Any] | None:
        fires = (await schedule())["fires"]
        found = [f for f in fires if f["name"] == fire["name"] and f["work_order"]]
        return found[0] if found else None

    shown = await eventually(submitted, "the triggered fire's work order", 30)
    order_id = shown["work_order"].rpartition("/")[2]
    order = _ok(
        await http.get(
            f"{API}/queues/hourly/work-orders/{order_id}", headers=console.headers("viewer")
        )
    )
    assert order["work_order"]["state"] == "QUEUED"
    assert order["work_order"]["correlation_id"] == shown["correlation_id"]
    for action in ("pause", "resume", "trigger"):
        unknown = await http.post(
            f"{API}/jobs/hourly/schedules/nosched/{action}", headers=console.headers()
        )
        assert "nosched" in _error(unknown, 404, "NOT_FOUND")["message"], action
