"""The console as a service of its own (`conveyor serve console`, a Kubernetes pod): ready
only once it knows where every service is; sign-in; and the embedded default without
authentication, where signing in is optional."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from conveyor_core.runtime import Platform
from conveyor_core.settings import CoreSettings
from tests.helpers.console import NS, ConsolePlatform, start_console_platform
from tests.helpers.e2e import eventually


async def test_a_console_of_its_own_is_ready_once_it_knows_every_service(
    core: CoreSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVEYOR_CONSOLE_LISTEN_ADDRESS", "127.0.0.1:0")
    monkeypatch.setenv("CONVEYOR_EXECUTOR_LEASE_WAIT_SECONDS", "0.2")  # a quick drain at the end
    services = Platform(core, ["queue", "events", "scheduler", "executor"])
    port = await services.start("127.0.0.1:0")
    address = f"127.0.0.1:{port}"
    alone = Platform(CoreSettings(data_dir=tmp_path / "alone"), ["console"])
    await alone.start("127.0.0.1:0")
    partial = core.model_copy(update={"queue_address": address, "events_address": address})
    half = Platform(partial.model_copy(update={"data_dir": tmp_path / "half"}), ["console"])
    await half.start("127.0.0.1:0")
    full = core.model_copy(
        update={f"{peer}_address": address for peer in ("queue", "events", "scheduler", "executor")}
    )
    console = Platform(full, ["console"])
    await console.start("127.0.0.1:0")
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            url = alone.service("console").url
            assert (await http.get(f"{url}/healthz")).status_code == 200
            not_ready = await http.get(f"{url}/readyz")
            assert not_ready.status_code == 503
            assert not_ready.json()["missing_peers"] == ["queue", "events", "scheduler", "executor"]
            url = half.service("console").url
            assert (await http.get(f"{url}/readyz")).json()["missing_peers"] == [
                "scheduler",
                "executor",
            ]
            refused = await http.get(f"{url}/api/v1/namespaces/{NS}/schedules")
            assert refused.status_code == 503
            assert "CONVEYOR_SCHEDULER_ADDRESS" in refused.json()["error"]["message"]
            url = console.service("console").url
            ready = await http.get(f"{url}/readyz")
            assert ready.status_code == 200 and ready.json()["peers"]["executor"] == address
            queues = await http.get(f"{url}/api/v1/namespaces/{NS}/queues")
            assert queues.status_code == 200 and queues.json() == {"queues": []}
            await console.service("console").start()  # again: nothing changes
            await console.service("console").drain()  # what Platform.stop does first
            draining = await http.get(f"{url}/readyz")
            assert draining.status_code == 503 and draining.json()["draining"] is True
            assert (await http.get(f"{url}/healthz")).status_code == 200  # still answering
    finally:
        for platform in (console, half, alone, services):
            await platform.stop(grace=0)


@pytest.fixture
async def open_console(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ConsolePlatform:
    env = await start_console_platform(
        CoreSettings(data_dir=tmp_path), tmp_path, monkeypatch, auth=False
    )
    yield env  # type: ignore[misc]
    await env.platform.stop(grace=1)


async def test_without_authentication_signing_in_is_optional(open_console: ConsolePlatform) -> None:
    await open_console.submit("manual", {"n": 1})
    async with httpx.AsyncClient(base_url=open_console.url, timeout=30) as http:
        home = await http.get("/", follow_redirects=True)
        assert home.status_code == 200 and str(home.url).endswith(f"/namespaces/{NS}")
        assert 'src="/static/console.js"' in home.text and "https://" not in home.text
        assert 'href="/signin">Sign in' in home.text and "Sign out" not in home.text
        queues = (await http.get(f"/api/v1/namespaces/{NS}/queues")).json()["queues"]
        assert [q["stats"]["depth_by_state"]["QUEUED"] for q in queues if q["id"] == "manual"] == [
            1
        ]
        for asset in ("console.js", "charts.js", "console.css", "favicon.svg"):
            served = await http.get(f"/static/{asset}")
            # Nothing fetched from elsewhere (http://www.w3.org/2000/svg is a name, not a fetch).
            assert served.status_code == 200 and "https://" not in served.text
            assert "http://" not in served.text.replace("http://www.w3.org/2000/svg", "")


async def test_sign_in_sets_a_strict_cookie_and_refuses_a_bad_token_or_a_foreign_redirect(
    core: CoreSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = await start_console_platform(core, tmp_path, monkeypatch, auth=True)
    try:
        async with httpx.AsyncClient(base_url=env.url, timeout=30) as http:
            empty = await http.post("/signin", data={"token": "", "namespace": NS})
            assert empty.status_code == 400 and "Paste a bearer token" in empty.text
            bad = await http.post("/signin", data={"token": "cvy_forged", "namespace": NS})
            assert bad.status_code == 401 and "refused the token" in bad.text
            assert "conveyor_token" not in bad.headers.get("set-cookie", "")
            good = await http.post(
                "/signin",
                data={"token": env.tokens["viewer"], "namespace": NS, "next": "//evil.example/x"},
            )
            assert good.status_code == 303 and good.headers["location"] == f"/namespaces/{NS}"
            cookie = good.headers["set-cookie"].lower()
            assert (
                "conveyor_token=" in cookie and "httponly" in cookie and "samesite=strict" in cookie
            )
            queues = await http.get(f"/api/v1/namespaces/{NS}/queues")  # the cookie is kept
            assert queues.status_code == 200
            assert "Sign out" in (await http.get(f"/namespaces/{NS}/runs")).text
            out = await http.post("/signout")
            assert out.status_code == 303
            assert (await http.get(f"/api/v1/namespaces/{NS}/queues")).status_code == 401
    finally:
        await env.platform.stop(grace=1)


async def test_events_pending_past_the_stale_threshold_are_flagged(
    core: CoreSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVEYOR_EVENTS_STALE_AFTER_SECONDS", "0.5")
    env = await start_console_platform(core, tmp_path, monkeypatch, auth=False)
    try:
        event = await env.publish("notes", "waits for a consumer")
        sequence = event.name.rpartition("/")[2]
        async with httpx.AsyncClient(base_url=env.url, timeout=30) as http:

            async def stale() -> dict[str, object] | None:
                body = (
                    await http.get(f"/api/v1/namespaces/{NS}/topics/notes/events/{sequence}")
                ).json()
                return body["event"] if body["event"]["stale"] else None  # type: ignore[no-any-return]

            flagged = await eventually(stale, "the event flagged stale", 30)
            assert flagged is not None and flagged["status"] == "PENDING"
            listed = (await http.get(f"/api/v1/namespaces/{NS}/topics/notes/events")).json()
            assert [e["stale"] for e in listed["events"]] == [True]
            assert listed["stats"]["stale"] == 1
            topics = (await http.get(f"/api/v1/namespaces/{NS}/topics")).json()["topics"]
            assert [t["stats"]["stale"] for t in topics if t["id"] == "notes"] == [1]
            skipped = await http.post(
                f"/api/v1/namespaces/{NS}/topics/notes/events/{sequence}/skip",
                json={"reason": "nobody consumes notes"},
            )
            assert skipped.json()["event"]["status"] == "SKIPPED"
            assert skipped.json()["event"]["skipped_by"] == "console"  # no principal: the claim
            after = (await http.get(f"/api/v1/namespaces/{NS}/topics/notes/events")).json()
            assert [e["stale"] for e in after["events"]] == [False]  # skipped is not stale
    finally:
        await env.platform.stop(grace=1)
