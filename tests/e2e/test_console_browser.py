"""The console's pages in a real headless browser: Debian's chromium driven by Playwright.

One secured platform (embedded default) serves the whole module. The pages are
checked with Playwright's auto-waiting `expect(...)`, never with sleeps.
Without /usr/bin/chromium the tests skip (`apt-get install chromium`), or fail under
CONVEYOR_REQUIRE_SERVICES=1 (CI, where .ci/run installs it).
Screenshots of the main pages go to $CONVEYOR_TEST_CONSOLE_SCREENSHOTS when set
(docs/console.md: `CONVEYOR_TEST_CONSOLE_SCREENSHOTS=docs/console`).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import conveyor
from conveyor_core.fake_shop import FakeShop
from conveyor_core.settings import CoreSettings
from tests.helpers import console as helpers
from tests.helpers import scheduler as scheduler_helpers
from tests.helpers.console import NS, ConsolePlatform, start_console_platform
from tests.helpers.e2e import eventually
from tests.helpers.services import services_required

CHROMIUM = "/usr/bin/chromium"
#: Generous: a loaded 2-core machine; expect() returns as soon as the page shows it.
WAIT_MS = 60_000

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
async def site(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ConsolePlatform]:
    tmp = tmp_path_factory.mktemp("console")
    shop = FakeShop().start()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CONVEYOR_EXAMPLE_SHOP_URL", shop.url)
        env = await start_console_platform(CoreSettings(data_dir=tmp), tmp, patch, auth=True)
        env.shop = shop
        try:
            yield env
        finally:
            await env.platform.stop(grace=1)
            shop.stop()


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Any]:
    """Chromium, and expect() waiting up to WAIT_MS."""
    if not os.path.exists(CHROMIUM):  # noqa: ASYNC240 (one stat, before any loop work)
        message = f"no browser at {CHROMIUM}: apt-get install chromium"
        if services_required():
            pytest.fail(message)
        pytest.skip(message)
    from playwright.async_api import async_playwright, expect

    expect.set_options(timeout=WAIT_MS)
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        yield launched
        await launched.close()


@pytest.fixture
async def page(browser: Any, site: ConsolePlatform) -> AsyncIterator[Any]:
    context = await browser.new_context(base_url=site.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(WAIT_MS)
    tab = await context.new_page()
    yield tab
    await context.close()


async def sign_in(page: Any, site: ConsolePlatform, who: str = "operator") -> None:
    from playwright.async_api import expect

    await page.goto("/signin")
    await page.get_by_label("Bearer token").fill(site.tokens[who])
    await page.get_by_label("Namespace").fill(NS)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page).to_have_url(f"{site.url}/namespaces/{NS}")


async def test_sign_in_with_a_token_then_the_overview_shows_the_queues(
    page: Any, site: ConsolePlatform
) -> None:
    from playwright.async_api import expect

    await site.submit("manual", {"n": 1})
    await page.goto(f"/namespaces/{NS}")
    alert = page.get_by_role("alert")
    await expect(alert).to_contain_text("needs a bearer token")  # signed out: told so
    await alert.get_by_role("link", name="Sign in").click()
    await page.get_by_label("Bearer token").fill("cvy_not-a-real-token")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_contain_text("refused the token")
    await sign_in(page, site)
    card = page.locator(".card.queue[data-queue=manual]")
    await expect(card).to_contain_text("queued")
    await expect(card.locator("svg.chart").first).to_be_visible()
    await expect(card.locator("dd").first).to_have_text("1")


async def test_a_running_task_shows_its_progress_change_until_it_ends(
    page: Any, site: ConsolePlatform
) -> None:
    from playwright.async_api import expect

    async with conveyor.Client(site.address, namespace=NS, token=site.tokens["operator"]) as client:
        handle = await client.submit(helpers.stepped, key="browser")
    await sign_in(page, site)
    await page.goto(f"/{handle.run}")
    await expect(page.locator("#run-progress")).to_have_text("10%")
    await expect(page.locator("#run-state")).to_have_text("RUNNING")
    reason = page.get_by_label("Reason")
    await reason.fill("half typed")  # the abort form: outside what the refreshes redraw
    first, second = helpers.GATES["browser"]
    first.set()
    await expect(page.locator("#run-progress")).to_have_text("70%")  # refreshed by itself
    await expect(reason).to_have_value("half typed")  # kept through the refresh
    await expect(page.locator("#run-progress-message")).to_have_text("step at 70%")
    second.set()
    await expect(page.locator("#run-state")).to_have_text("SUCCEEDED")
    await expect(page.get_by_role("button", name="Abort run")).to_have_count(0)
    # The links follow the order's life: run -> work order -> journal trail.
    await page.get_by_role("link", name=handle.id).click()
    await expect(page.locator("h1")).to_have_text("Work order")
    await expect(page.locator("dl.kv dd").first).to_have_text("SUCCEEDED")
    await page.get_by_role("link", name="journal trail").click()
    await expect(page.locator("table")).to_contain_text("executor.run.succeeded")  # refreshes
    await expect(page.locator("table")).to_contain_text("queue.work_order.queued")


async def test_resolving_a_blocked_mutation_lets_the_run_continue(
    page: Any, site: ConsolePlatform
) -> None:
    from playwright.async_api import expect

    order = site.shop.add_order("eve", 50, mode="apply_then_cut_unknown")
    await site.trigger("shop", "poll_orders")
    async with httpx.AsyncClient(base_url=site.url, headers=site.headers()) as http:

        async def blocked() -> list[dict[str, Any]]:
            reply = await http.get(f"/api/v1/namespaces/{NS}/blocked")
            return reply.json()["blocked"]  # type: ignore[no-any-return]

        (run,) = await eventually(blocked, "a blocked charge run", 60)
    site.shop.modes[str(order["id"])] = ""
    await sign_in(page, site)
    await page.goto(f"/namespaces/{NS}/blocked")
    card = page.locator(f".blocked-run[data-run='{run['id']}']")
    await expect(card.locator(".prompt")).to_contain_text("Order")
    await card.get_by_role("button", name="Applied…").click()
    applied = card.locator("form[data-resolution=applied]")
    await applied.get_by_role("button", name="It was applied").click()  # no reason yet
    await expect(page.get_by_role("alert")).to_contain_text("reason: required")
    await applied.get_by_label("Reason").fill("seen in the payment dashboard")
    await applied.get_by_role("button", name="It was applied").click()
    await expect(page.locator(".notice")).to_contain_text("the run continues")
    await page.goto(f"/namespaces/{NS}/handlerRuns/{run['id']}")
    await expect(page.locator("#handler-phase")).to_have_text("COMMITTED")  # it went on
    assert len(site.shop.charges_of(order["id"])) == 1


async def test_skipping_an_event_asks_for_a_reason_and_a_viewer_is_refused(
    page: Any, site: ConsolePlatform
) -> None:
    from playwright.async_api import expect

    event = await site.publish("notes", "a note nobody reads")
    path = f"/namespaces/{NS}/topics/notes/events/{event.name.rpartition('/')[2]}"
    await sign_in(page, site, "viewer")
    await page.goto(path)
    await expect(page.locator("#event-status")).to_have_text("PENDING")
    await page.get_by_label("Reason").fill("noise")
    await page.get_by_role("button", name="Skip event").click()
    refused = page.get_by_role("alert")
    await expect(refused).to_contain_text("PERMISSION_DENIED (403)")
    await expect(refused).to_contain_text("lacks the role")
    await expect(page.locator("#event-status")).to_have_text("PENDING")  # nothing changed
    await sign_in(page, site)
    await page.goto(path)
    await page.get_by_role("button", name="Skip event").click()
    await expect(page.get_by_role("alert")).to_contain_text("reason: required")
    await page.get_by_label("Reason").fill("noise")
    await page.get_by_role("button", name="Skip event").click()
    await expect(page.locator(".notice")).to_contain_text("Event skipped")
    await expect(page.locator("#event-status")).to_have_text("SKIPPED")
    await page.goto(f"/namespaces/{NS}/topics/notes")
    await expect(page.locator("table")).to_contain_text("SKIPPED")


async def test_redriving_a_dead_letter_from_its_queue_page(
    page: Any, site: ConsolePlatform
) -> None:
    from playwright.async_api import expect

    # A queue of its own: the site is shared by the module's tests (the pictures' test
    # dead-letters into "letters"), and they run in random order.
    dead = await site.dead_letter("redrive-letters")
    await sign_in(page, site)
    await page.goto(f"/namespaces/{NS}/queues/redrive-letters/dead-letters")
    link = page.locator("a.dead-letter")
    await expect(link).to_have_text(dead.name.rpartition("/")[2])
    await page.get_by_label("Reason").fill("parser fixed")
    await page.get_by_role("button", name="Redrive dead letters").click()
    await expect(page.locator(".notice")).to_contain_text("Redrove 1 work order(s)")
    await expect(page.locator("a.dead-letter")).to_have_count(0)
    await expect(page.locator("table").last).to_contain_text("parser fixed")  # past redrives
    await page.goto(f"/{dead.name}")
    await expect(page.locator("dl.kv dd").first).to_have_text("QUEUED")


async def test_pausing_a_queue_from_its_page_shows_it_paused(
    page: Any, site: ConsolePlatform
) -> None:
    from playwright.async_api import expect

    await site.submit("held", {"n": 1})
    await sign_in(page, site, "viewer")
    await page.goto(f"/namespaces/{NS}/queues/held")
    await expect(page.locator("#queue-state")).to_have_text("ACTIVE")
    await page.get_by_role("button", name="Pause queue…").click()
    await page.get_by_role("button", name="Pause queue", exact=True).click()  # confirmed
    refused = page.get_by_role("alert")
    await expect(refused).to_contain_text("PERMISSION_DENIED (403)")
    await expect(refused).to_contain_text("operator")  # the platform's message
    await expect(page.locator("#queue-state")).to_have_text("ACTIVE")  # nothing changed
    await sign_in(page, site)
    await page.get_by_role("link", name="held", exact=True).click()  # the overview's card
    await expect(page.locator("h1")).to_have_text("Queue")
    await page.get_by_role("button", name="Pause queue…").click()
    await page.get_by_role("button", name="Cancel").click()  # changed nothing
    await expect(page.get_by_role("button", name="Pause queue…")).to_be_visible()
    await page.get_by_role("button", name="Pause queue…").click()
    await page.get_by_role("button", name="Pause queue", exact=True).click()
    await expect(page.locator(".notice")).to_contain_text("Queue held paused")
    await expect(page.locator("#queue-state")).to_have_text("PAUSED")
    await page.goto(f"/namespaces/{NS}")
    await expect(page.locator(".card.queue[data-queue=held] h3")).to_contain_text("PAUSED")
    await page.goto(f"/namespaces/{NS}/queues/held")
    await page.get_by_role("button", name="Resume queue…").click()
    await page.get_by_role("button", name="Resume queue", exact=True).click()
    await expect(page.locator(".notice")).to_contain_text("Queue held resumed")
    await expect(page.locator("#queue-state")).to_have_text("ACTIVE")


async def test_pausing_a_workflow_asks_for_a_reason_and_shows_who_and_why(
    page: Any, site: ConsolePlatform
) -> None:
    from playwright.async_api import expect

    await sign_in(page, site)
    await page.goto(f"/namespaces/{NS}/workflows/shop")
    await expect(page.locator("#workflow-paused")).to_have_text("no")
    await page.get_by_role("button", name="Pause workflow").click()  # no reason yet
    await expect(page.get_by_role("alert")).to_contain_text("reason: required")
    await page.get_by_label("Reason").fill("shop API down")
    await page.get_by_role("button", name="Pause workflow").click()
    await expect(page.locator(".notice")).to_contain_text("Workflow shop paused")
    paused = page.locator("#workflow-paused")
    await expect(paused).to_contain_text("by oncall (on behalf of console): shop API down")
    await page.get_by_role("button", name="Resume workflow…").click()
    await page.get_by_role("button", name="Resume workflow", exact=True).click()
    await expect(page.locator("#workflow-paused")).to_have_text("no")


async def test_a_schedule_paused_then_triggered_now_from_its_page(
    page: Any, site: ConsolePlatform
) -> None:
    from playwright.async_api import expect

    await site.create_schedule(
        "hourly", scheduler_helpers.http_job(queue="hourly"), scheduler_helpers.interval(3600)
    )
    await sign_in(page, site)
    await page.goto(f"/namespaces/{NS}/jobs/hourly/schedules/every")
    await expect(page.locator("#schedule-paused")).to_have_text("no")
    await page.get_by_role("button", name="Pause schedule…").click()
    await page.get_by_role("button", name="Pause schedule", exact=True).click()
    await expect(page.locator("#schedule-paused")).to_have_text("PAUSED")
    await page.get_by_role("button", name="Resume schedule…").click()
    await page.get_by_role("button", name="Resume schedule", exact=True).click()
    await expect(page.locator("#schedule-paused")).to_have_text("no")
    await page.get_by_role("button", name="Trigger now…").click()
    await page.get_by_role("button", name="Trigger now", exact=True).click()
    await expect(page.locator(".notice")).to_contain_text("Triggered: fire")
    triggered = page.locator("table").last.locator("tbody tr", has_text="TRIGGERED")
    await expect(triggered).to_have_count(1)  # fired once
    await expect(triggered.get_by_role("link", name="order", exact=True)).to_be_visible()


async def test_screenshots_of_the_main_pages(
    page: Any, site: ConsolePlatform, tmp_path: Path
) -> None:
    """Every main page draws without an error; the pictures are docs/console/*.png."""
    from playwright.async_api import expect

    target = Path(os.environ.get("CONVEYOR_TEST_CONSOLE_SCREENSHOTS") or tmp_path)
    target.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240
    site.shop.add_order("kim", 20, mode="apply_then_cut_unknown")
    await site.trigger("shop", "poll_orders")
    async with conveyor.Client(site.address, namespace=NS, token=site.tokens["operator"]) as client:
        handle = await client.submit(helpers.stepped, key="picture")
    await site.dead_letter("letters")
    await sign_in(page, site)
    async with httpx.AsyncClient(base_url=site.url, headers=site.headers()) as http:
        schedules = (await http.get(f"/api/v1/namespaces/{NS}/schedules")).json()["schedules"]
        await eventually(lambda: _has_blocked(http), "a blocked run for the picture", 60)
    producer = next(s for s in schedules if "poll" in s["id"])
    shots = {
        "overview": (f"/namespaces/{NS}", ".card.queue"),
        "runs": (f"/namespaces/{NS}/runs", "table"),
        "run": (f"/{handle.run}", "#run-progress"),
        "workflows": (f"/namespaces/{NS}/workflows", ".card.workflow"),
        "blocked": (f"/namespaces/{NS}/blocked", ".blocked-run"),
        "topics": (f"/namespaces/{NS}/topics", "table"),
        "events": (f"/namespaces/{NS}/topics/orders", "table"),
        "schedule": (f"/{producer['name']}", ".next-fires"),
        "dead-letters": (f"/namespaces/{NS}/queues/letters/dead-letters", "a.dead-letter"),
    }
    for name, (path, ready) in shots.items():
        await page.goto(path)
        await expect(page.locator(ready).first).to_be_visible()
        await expect(page.locator(".error")).to_have_count(0)
        await page.screenshot(path=str(target / f"{name}.png"), full_page=True)
    for gate in helpers.GATES["picture"]:
        gate.set()
    assert sorted(p.stem for p in target.glob("*.png")) == sorted(shots)  # noqa: ASYNC240


async def _has_blocked(http: httpx.AsyncClient) -> bool:
    reply = await http.get(f"/api/v1/namespaces/{NS}/blocked")
    return bool(reply.json()["blocked"])
