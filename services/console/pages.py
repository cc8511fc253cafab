"""The pages: each is a server-rendered shell (navigation, title, the page's parameters)
whose content static/console.js draws from the JSON API and refreshes.

Page paths follow the services' resource names, so a page's path is the name of what it
shows (/namespaces/shop/runs/r1 shows namespaces/shop/runs/r1) and links follow a work
order's life: order -> run -> journal trail -> trace id.
"""

from __future__ import annotations

import html
import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from conveyor_console.settings import ConsoleSettings
from conveyor_console.web import token_of

router = APIRouter(include_in_schema=False)

NAV = [
    ("overview", "", "Overview"),
    ("runs", "/runs", "Runs"),
    ("workflows", "/workflows", "Workflows"),
    ("blocked", "/blocked", "Blocked runs"),
    ("topics", "/topics", "Topics"),
    ("schedules", "/schedules", "Schedules"),
    ("dead-letters", "/dead-letters", "Dead letters"),
    ("journal", "/journal", "Journal"),
]

#: Page path under /namespaces/{ns} -> (page kind, title). {x} parts become the page's args.
PAGES: list[tuple[str, str, str]] = [
    ("", "overview", "Overview"),
    ("/runs", "runs", "Runs"),
    ("/runs/{run}", "run", "Run"),
    ("/queues/{queue}", "queue", "Queue"),
    ("/queues/{queue}/workOrders/{order}", "work-order", "Work order"),
    ("/queues/{queue}/dead-letters", "queue-dead-letters", "Dead letters"),
    ("/dead-letters", "dead-letters", "Dead letters"),
    ("/workflows", "workflows", "Workflows"),
    ("/workflows/{workflow}", "workflow", "Workflow"),
    ("/sessions/{session}", "session", "Session"),
    ("/blocked", "blocked", "Blocked runs"),
    ("/handlerRuns/{run}", "handler-run", "Handler run"),
    ("/topics", "topics", "Topics"),
    ("/topics/{topic}", "topic", "Events"),
    ("/topics/{topic}/events/{sequence}", "event", "Event"),
    ("/schedules", "schedules", "Schedules"),
    ("/jobs/{job}/schedules/{schedule}", "schedule", "Schedule"),
    ("/journal", "journal", "Journal"),
]


def _layout(
    settings: ConsoleSettings,
    title: str,
    body: str,
    ns: str = "",
    nav: str = "",
    signed_in: bool = False,
) -> str:
    active = ' class="active"'
    links = (
        "".join(
            f'<a href="/namespaces/{html.escape(ns)}{path}"{active if key == nav else ""}>'
            f"{label}</a>"
            for key, path, label in NAV
        )
        if ns
        else ""
    )
    switch = (
        f'<form class="ns" method="get" action="/switch"><label>namespace '
        f'<input name="ns" value="{html.escape(ns)}" size="12"></label></form>'
        if ns
        else ""
    )
    account = (
        '<form method="post" action="/signout" class="signout"><button type="submit">'
        "Sign out</button></form>"
        if signed_in
        else '<a class="signout" href="/signin">Sign in</a>'
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)} · Conveyor</title>
<link rel="stylesheet" href="/static/console.css">
<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">
</head><body>
<header><a class="brand" href="/">Conveyor</a><nav>{links}</nav>{switch}
{account}
</header>
{body}
</body></html>"""


def sign_in(settings: ConsoleSettings, next_path: str, message: str) -> str:
    error = f'<p class="error" role="alert">{html.escape(message)}</p>' if message else ""
    body = f"""<main class="signin"><h1>Sign in</h1>
<p>Paste a bearer token (<code>conveyor token create</code>; docs/security.md). The console calls
the services with it: you see and change what the token may. When the platform runs without
authentication, no token is needed: <a href="/">go to the overview</a>.</p>
{error}
<form method="post" action="/signin">
<label>Bearer token <input type="password" name="token" autocomplete="off" required></label>
<label>Namespace <input name="namespace" value="{html.escape(settings.default_namespace)}"></label>
<input type="hidden" name="next" value="{html.escape(next_path)}">
<button type="submit">Sign in</button>
</form></main>"""
    return _layout(settings, "Sign in", body)


def page(
    settings: ConsoleSettings,
    kind: str,
    title: str,
    ns: str,
    args: dict[str, Any],
    signed_in: bool = False,
) -> str:
    data = json.dumps(
        {
            "page": kind,
            "ns": ns,
            "args": args,
            "refresh": settings.refresh_seconds,
            "trace_url": settings.trace_url,
        }
    )
    nav = (
        kind
        if kind in {k for k, _, _ in NAV}
        else {
            "queue": "overview",
            "run": "runs",
            "work-order": "runs",
            "queue-dead-letters": "dead-letters",
            "workflow": "workflows",
            "session": "workflows",
            "handler-run": "blocked",
            "topic": "topics",
            "event": "topics",
            "schedule": "schedules",
        }.get(kind, "")
    )
    body = (
        f'<main id="page" data-config="{html.escape(data)}">'
        f"<h1>{html.escape(title)}</h1>"
        '<div id="status" role="status"></div><div id="content">Loading…</div></main>'
        '<script src="/static/charts.js"></script><script src="/static/console.js"></script>'
    )
    return _layout(settings, title, body, ns, nav, signed_in)


def _add(path: str, kind: str, title: str) -> None:
    async def view(request: Request) -> HTMLResponse:
        params = dict(request.path_params)
        ns = params.pop("ns")
        args = {**params, **dict(request.query_params)}
        settings = request.app.state.settings
        return HTMLResponse(page(settings, kind, title, ns, args, signed_in(request)))

    view.__name__ = f"page_{kind.replace('-', '_')}"
    router.add_api_route(
        f"/namespaces/{{ns}}{path}", view, methods=["GET"], response_class=HTMLResponse
    )


for _path, _kind, _title in PAGES:
    _add(_path, _kind, _title)


@router.get("/")
async def home(request: Request) -> RedirectResponse:
    settings: ConsoleSettings = request.app.state.settings
    return RedirectResponse(f"/namespaces/{settings.default_namespace}", status_code=303)


@router.get("/switch")
async def switch(request: Request, ns: str = "") -> RedirectResponse:
    ns = ns.strip().strip("/") or request.app.state.settings.default_namespace
    return RedirectResponse(f"/namespaces/{ns}", status_code=303)


def signed_in(request: Request) -> bool:
    return token_of(request) is not None
