"""The console's JSON API against a real secured platform (embedded SQLite and PostgreSQL +
Redis): what it shows, and bad input answered with a clear error and nothing changed."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

import conveyor
from conveyor.scheduler.v1 import messages_pb2 as sched_pb
from conveyor_core.fake_shop import FakeShop
from tests.helpers import console as helpers
from tests.helpers import scheduler as scheduler_helpers
from tests.helpers.console import NS, ConsolePlatform
from tests.helpers.e2e import eventually

API = f"/api/v1/namespaces/{NS}"


def _error(reply: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert reply.status_code == status, reply.text
    error: dict[str, Any] = reply.json()["error"]
    assert error["status"] == status and error["code"] == code, error
    return error


async def test_queues_show_stats_and_a_work_order_its_position(
    console: ConsolePlatform, http: httpx.AsyncClient
) -> None:
    first = await console.submit("manual", {"n": 1})
    second = await console.submit("manual", {"n": 2})
    reply = await http.get(f"{API}/queues", headers=console.headers("viewer"))
    assert reply.status_code == 200, reply.text
    (manual,) = [q for q in reply.json()["queues"] if q["id"] == "manual"]
    assert manual["stats"]["depth_by_state"]["QUEUED"] == 2
    assert manual["stats"]["in_flight"] == 0
    assert manual["stats"]["oldest_queued_age"] >= 0
    order_id = second.name.rpartition("/")[2]
    detail = await http.get(
        f"{API}/queues/manual/work-orders/{order_id}", headers=console.headers("viewer")
    )
    assert detail.status_code == 200, detail.text
    body = detail.json()
    assert body["work_order"]["state"] == "QUEUED"
    assert body["work_order"]["spec"]["payload"]["json"] == {"n": 2}
    assert body["position"]["ahead"] == 1  # the first order is ahead of it
    assert body["history"][0]["to_state"] == "QUEUED"
    assert first.name != second.name
    listed = await http.get(
        f"{API}/queues/manual/work-orders?state=queued", headers=console.headers("viewer")
    )
    assert {o["name"] for o in listed.json()["work_orders"]} == {first.name, second.name}
    bad = await http.get(
        f"{API}/queues/manual/work-orders?state=sleeping", headers=console.headers()
    )
    assert _error(bad, 400, "INVALID_ARGUMENT")["field_violations"][0]["field"] == "state"


async def test_unknown_ids_foreign_namespaces_and_missing_tokens_are_clear_errors(
    console: ConsolePlatform, http: httpx.AsyncClient
) -> None:
    unknown = str(uuid.uuid4())
    for path in (
        f"/runs/{unknown}",
        f"/queues/manual/work-orders/{unknown}",
        "/topics/no-such-topic/events/1",
        "/workflows/no-such-workflow",
        f"/handler-runs/{unknown}",
        "/jobs/nojob/schedules/nosched",
    ):
        reply = await http.get(f"{API}{path}", headers=console.headers())
        assert _error(reply, 404, "NOT_FOUND")["message"], path
    nowhere = await http.get(f"{API}/no/such/endpoint", headers=console.headers())
    assert "no/such/endpoint" in _error(nowhere, 404, "NOT_FOUND")["message"]
    wrong = await http.delete(f"{API}/queues", headers=console.headers())
    _error(wrong, 405, "METHOD_NOT_ALLOWED")
    page = await http.get("/no-such-page")
    assert page.status_code == 404 and "Conveyor console" in page.text
    malformed = await http.get(
        f"{API}/queues/manual/work-orders/not-a-uuid", headers=console.headers()
    )
    assert _error(malformed, 400, "INVALID_ARGUMENT")["field_violations"][0]["field"] == "name"
    foreign = await http.get(f"{API}/queues", headers=console.headers("foreign"))
    assert "wf" in _error(foreign, 403, "PERMISSION_DENIED")["message"]
    anonymous = await http.get(f"{API}/queues")
    _error(anonymous, 401, "UNAUTHENTICATED")
    forged = await http.get(f"{API}/queues", headers={"authorization": "Bearer not-a-token"})
    _error(forged, 401, "UNAUTHENTICATED")
    async with httpx.AsyncClient(
        base_url=console.url, cookies={"conveyor_token": console.tokens["viewer"]}
    ) as signed_in:  # the pages' sign-in cookie works as the header does
        assert (await signed_in.get(f"{API}/queues")).status_code == 200


async def test_redrive_needs_a_reason_and_the_operator_role(
    console: ConsolePlatform, http: httpx.AsyncClient
) -> None:
    dead = await console.dead_letter("manual")
    letters = await http.get(f"{API}/queues/manual/dead-letters", headers=console.headers("viewer"))
    assert [o["name"] for o in letters.json()["work_orders"]] == [dead.name]
    assert letters.json()["work_orders"][0]["last_failure"]["type"] == "bad_input"
    for body in ({}, {"reason": ""}, {"reason": "   "}):
        refused = await http.post(
            f"{API}/queues/manual/redrive", json=body, headers=console.headers()
        )
        error = _error(refused, 400, "INVALID_ARGUMENT")
        assert error["field_violations"][0]["field"] == "reason"
        assert "nothing was changed" in error["message"]
    viewer = await http.post(
        f"{API}/queues/manual/redrive",
        json={"reason": "retry it"},
        headers=console.headers("viewer"),
    )
    assert "operator" in _error(viewer, 403, "PERMISSION_DENIED")["message"]
    still = await http.get(f"{API}/queues/manual/dead-letters", headers=console.headers("viewer"))
    assert [o["name"] for o in still.json()["work_orders"]] == [dead.name]  # nothing changed
    done = await http.post(
        f"{API}/queues/manual/redrive",
        json={"reason": "parser fixed", "error_type": "bad_input"},
        headers=console.headers(),
    )
    assert done.status_code == 200, done.text
    assert done.json()["redrive"]["redriven_count"] == 1
    # The token's principal, recorded as acting through the console.
    assert done.json()["redrive"]["requested_by"] == "oncall (on behalf of console)"
    order = await http.get(
        f"{API}/queues/manual/work-orders/{dead.name.rpartition('/')[2]}", headers=console.headers()
    )
    assert order.json()["work_order"]["state"] == "QUEUED"


async def test_a_blocked_run_is_resolved_once_with_a_reason_then_the_workflow_goes_on(
    console: ConsolePlatform, http: httpx.AsyncClient, fake_shop: FakeShop
) -> None:
    order = fake_shop.add_order("eve", 50, mode="apply_then_cut_unknown")
    await console.trigger("shop", "poll_orders")

    async def blocked() -> list[dict[str, Any]]:
        reply = await http.get(f"{API}/blocked", headers=console.headers("viewer"))
        assert reply.status_code == 200, reply.text
        return reply.json()["blocked"]  # type: ignore[no-any-return]

    (run,) = await eventually(blocked, "a blocked charge run", 60)
    assert "Order" in run["prompt"] and run["mutation"]["state"] == "INDETERMINATE"
    path = f"{API}/handler-runs/{run['id']}/resolve"
    missing = await http.post(path, json={"resolution": "skip"}, headers=console.headers())
    assert _error(missing, 400, "INVALID_ARGUMENT")["field_violations"] == [
        {"field": "reason", "description": "required: say why"}
    ]
    unknown = await http.post(
        path, json={"resolution": "maybe", "reason": "x"}, headers=console.headers()
    )
    assert _error(unknown, 400, "INVALID_ARGUMENT")["field_violations"][0]["field"] == "resolution"
    viewer = await http.post(
        path, json={"resolution": "skip", "reason": "not mine"}, headers=console.headers("viewer")
    )
    _error(viewer, 403, "PERMISSION_DENIED")
    assert [r["id"] for r in await blocked()] == [run["id"]]  # still blocked
    fake_shop.modes[str(order["id"])] = ""
    done = await http.post(
        path,
        json={
            "resolution": "applied",
            "reason": "seen in the dashboard",
            "result_json": '{"charge_id": "ch_1"}',
        },
        headers=console.headers(),
    )
    assert done.status_code == 200, done.text
    assert done.json()["mutation"]["resolved_by"] == "oncall (on behalf of console)"
    again = await http.post(
        path, json={"resolution": "skip", "reason": "a stale page"}, headers=console.headers()
    )
    # A stale page (already resolved elsewhere): refused, the first resolution stands.
    assert _error(again, 409, "FAILED_PRECONDITION")["message"]

    async def committed() -> bool:
        reply = await http.get(f"{API}/handler-runs/{run['id']}", headers=console.headers())
        return reply.json()["handler_run"]["phase"] == "COMMITTED"

    await eventually(committed, "the resolved run committed", 60)
    detail = (await http.get(f"{API}/handler-runs/{run['id']}", headers=console.headers())).json()
    assert detail["handler_run"]["mutation_result"]["kind"] == "applied"
    assert len(fake_shop.charges_of(order["id"])) == 1
    # The workflow's pages: its handlers, sessions and the topics it uses.
    workflows = (await http.get(f"{API}/workflows", headers=console.headers("viewer"))).json()
    shop = next(w for w in workflows["workflows"] if w["id"] == "shop")
    assert {h["kind"] for h in shop["handlers"]} == {"PRODUCER", "CONSUMER"}
    detail = (await http.get(f"{API}/workflows/shop", headers=console.headers("viewer"))).json()
    assert detail["sessions"] and {s["workflow"] for s in detail["sessions"]} == {"shop"}
    session_id = detail["sessions"][-1]["id"]
    session = (await http.get(f"{API}/sessions/{session_id}", headers=console.headers())).json()
    assert session["session"]["iterations"] >= 1 and session["handler_runs"]
    phases = await http.get(
        f"{API}/handler-runs",
        params={"workflow": "shop", "phase": "committed"},
        headers=console.headers(),
    )
    assert run["id"] in {r["id"] for r in phases.json()["handler_runs"]}
    topics = (await http.get(f"{API}/topics", headers=console.headers("viewer"))).json()["topics"]
    assert {"orders", "receipts"} <= {t["id"] for t in topics}


async def test_skipping_an_event_needs_a_reason_and_happens_once(
    console: ConsolePlatform, http: httpx.AsyncClient
) -> None:
    event = await console.publish("notes", "a note nobody reads")
    sequence = event.name.rpartition("/")[2]
    listed = await http.get(f"{API}/topics/notes/events", headers=console.headers("viewer"))
    assert listed.status_code == 200, listed.text
    assert [e["status"] for e in listed.json()["events"]] == ["PENDING"]
    assert listed.json()["events"][0]["stale"] is False
    path = f"{API}/topics/notes/events/{sequence}/skip"
    _error(await http.post(path, json={}, headers=console.headers()), 400, "INVALID_ARGUMENT")
    viewer = await http.post(path, json={"reason": "noise"}, headers=console.headers("viewer"))
    _error(viewer, 403, "PERMISSION_DENIED")
    unchanged = await http.get(f"{API}/topics/notes/events/{sequence}", headers=console.headers())
    assert unchanged.json()["event"]["status"] == "PENDING"
    done = await http.post(path, json={"reason": "noise"}, headers=console.headers())
    assert done.status_code == 200, done.text
    assert done.json()["event"]["status"] == "SKIPPED"
    assert done.json()["event"]["skip_reason"] == "noise"
    again = await http.post(path, json={"reason": "noise again"}, headers=console.headers())
    # Skipping is idempotent in the event store: a stale page's second skip changes nothing.
    assert again.status_code == 200 and again.json()["event"]["skip_reason"] == "noise"
    after = await http.get(f"{API}/topics/notes/events/{sequence}", headers=console.headers())
    assert after.json()["event"]["skip_reason"] == "noise"  # the first skip stands


async def test_schedules_runs_and_the_journal_trail(
    console: ConsolePlatform, http: httpx.AsyncClient
) -> None:
    await console.trigger("tight", "burst")
    schedules = (await http.get(f"{API}/schedules", headers=console.headers("viewer"))).json()
    burst = next(s for s in schedules["schedules"] if "burst" in s["id"])

    async def fired() -> dict[str, Any] | None:
        reply = await http.get(
            f"{API}/jobs/{burst['job']}/schedules/{burst['id']}", headers=console.headers("viewer")
        )
        body: dict[str, Any] = reply.json()
        return (
            body
            if any(f["kind"] == "TRIGGERED" and f["work_order"] for f in body["fires"])
            else None
        )

    detail = await eventually(fired, "the triggered fire", 30)
    assert len(detail["next_fires"]) == 5 and detail["next_fires"] == sorted(detail["next_fires"])
    fire = next(f for f in detail["fires"] if f["kind"] == "TRIGGERED")

    async def run_of_fire() -> dict[str, Any] | None:
        reply = await http.get(
            f"{API}/runs",
            params={"work_order": fire["work_order"]},
            headers=console.headers("viewer"),
        )
        runs = reply.json()["runs"]
        return runs[0] if runs and runs[0]["final"] else None

    run = await eventually(run_of_fire, "the fire's run ended", 60)
    assert run["state"] == "SUCCEEDED" and run["kind"] == "WORKFLOW"
    got = (await http.get(f"{API}/runs/{run['id']}", headers=console.headers("viewer"))).json()
    assert got["run"]["correlation_id"] == fire["correlation_id"]
    steps = await http.get(f"{API}/runs/{run['id']}/steps", headers=console.headers("viewer"))
    assert steps.status_code == 200 and isinstance(steps.json()["steps"], list)
    filtered = await http.get(
        f"{API}/runs", params={"state": "succeeded"}, headers=console.headers()
    )
    assert all(r["state"] == "SUCCEEDED" for r in filtered.json()["runs"])
    _error(
        await http.get(f"{API}/runs?state=sleepy", headers=console.headers()),
        400,
        "INVALID_ARGUMENT",
    )

    async def trail() -> list[str]:
        reply = await http.get(
            f"{API}/journal",
            params={"correlation_id": run["correlation_id"]},
            headers=console.headers("viewer"),
        )
        types = [r["type"] for r in reply.json()["records"]]
        wanted = {"scheduler.schedule.fired", "executor.run.succeeded"}
        return types if wanted <= set(types) else []  # each service's outbox relays on its own

    types = await eventually(trail, "the order's journal trail", 30)
    assert {"queue.work_order.queued", "executor.run.started"} <= set(types)


async def test_a_schedule_shows_its_skipped_slots_with_the_reason(
    console: ConsolePlatform, http: httpx.AsyncClient
) -> None:
    # Every second into a queue nobody leases, overlap SKIP: the first order stays
    # queued, so the next slots are skipped and recorded.
    await console.create_schedule(
        "parked",
        scheduler_helpers.http_job(queue="parked"),
        scheduler_helpers.interval(1, overlap_policy=sched_pb.OVERLAP_POLICY_SKIP),
    )
    path = f"{API}/jobs/parked/schedules/every"

    async def skipped() -> list[dict[str, Any]] | None:
        # The first fire's submit is relayed apart from the fire: its work order may show
        # after the next slots were already skipped behind it (seen on a loaded machine).
        fires = (await http.get(path, headers=console.headers("viewer"))).json()["fires"]
        submitted = any(f["outcome"] == "SUBMITTED" and f["work_order"] for f in fires)
        slots = [f for f in fires if f["outcome"] == "SKIPPED"]
        return slots if submitted and slots else None

    slots = await eventually(skipped, "a skipped slot behind the submitted one", 30)
    assert slots[0]["reason"] and slots[0]["work_order"] == ""
    body = (await http.get(path, headers=console.headers("viewer"))).json()
    assert body["schedule"]["overlap_policy"] == "SKIP" and len(body["next_fires"]) == 5
    bad = await http.get(path, params={"next_fires": 1000}, headers=console.headers())
    assert _error(bad, 400, "INVALID_ARGUMENT")["field_violations"][0]["field"] == "next_fires"


async def test_aborting_a_running_task_needs_a_reason(
    console: ConsolePlatform, http: httpx.AsyncClient
) -> None:
    async with conveyor.Client(
        console.address, namespace=NS, token=console.tokens["operator"]
    ) as client:
        handle = await client.submit(helpers.stepped, key="abort-me")
    run_id = handle.id

    async def running() -> bool:
        reply = await http.get(f"{API}/runs/{run_id}", headers=console.headers("viewer"))
        return reply.status_code == 200 and reply.json()["run"]["state"] == "RUNNING"

    await eventually(running, "the task running", 30)
    queue = (
        await http.get(f"{API}/queues/console-tasks", headers=console.headers("viewer"))
    ).json()
    assert queue["queue"]["stats"]["in_flight"] == 1
    path = f"{API}/runs/{run_id}/abort"
    _error(
        await http.post(path, json={"reason": ""}, headers=console.headers()),
        400,
        "INVALID_ARGUMENT",
    )
    _error(
        await http.post(path, json={"reason": "x"}, headers=console.headers("viewer")),
        403,
        "PERMISSION_DENIED",
    )
    done = await http.post(path, json={"reason": "wrong input"}, headers=console.headers())
    assert done.status_code == 200, done.text

    async def aborted() -> bool:
        reply = await http.get(f"{API}/runs/{run_id}", headers=console.headers("viewer"))
        return reply.json()["run"]["state"] == "ABORTED"

    await eventually(aborted, "the run aborted", 30)


async def test_the_openapi_document_lists_the_api(http: httpx.AsyncClient) -> None:
    document = (await http.get("/api/openapi.json")).json()
    paths = document["paths"]
    for path in (
        "/api/v1/namespaces/{ns}/queues",
        "/api/v1/namespaces/{ns}/queues/{queue}/work-orders/{order}",
        "/api/v1/namespaces/{ns}/queues/{queue}/redrive",
        "/api/v1/namespaces/{ns}/runs/{run}",
        "/api/v1/namespaces/{ns}/handler-runs/{run}/resolve",
        "/api/v1/namespaces/{ns}/topics/{topic}/events/{sequence}/skip",
        "/api/v1/namespaces/{ns}/jobs/{job}/schedules/{schedule}",
    ):
        assert path in paths, path
    resolve = paths["/api/v1/namespaces/{ns}/handler-runs/{run}/resolve"]["post"]
    assert "reason" in str(resolve["summary"])
    assert (await http.get("/healthz")).json() == {"status": "SERVING"}
    assert (await http.get("/readyz")).json()["status"] == "SERVING"
