"""The console's web application: the JSON API under /api/v1 (OpenAPI at /api/openapi.json),
the pages, sign-in, static assets from the package, and health/readiness for probes."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from conveyor.queue.v1 import service_pb2 as q
from conveyor_console import pages
from conveyor_console.api import events, queues, runs, schedules, workflows
from conveyor_console.gateway import Gateway
from conveyor_console.settings import ConsoleSettings
from conveyor_console.web import (
    TOKEN_COOKIE,
    conveyor_error_handler,
    http_error_handler,
    token_of,
    validation_error_handler,
)
from conveyor_sdk._errors import ConveyorError

STATIC = Path(__file__).parent / "static"
API_PREFIX = "/api/v1"

DESCRIPTION = """The JSON API of the Conveyor console: what the pages show, for scripts and for
languages without gRPC. Every call is made to the services with the caller's bearer token
(`Authorization: Bearer ...`, or the console's sign-in cookie), so a token sees and changes
through this API exactly what it could through gRPC. Errors are
`{"error": {"status", "code", "message", "field_violations", "reason", "correlation_id"}}`
with the HTTP status of the gRPC code (400 INVALID_ARGUMENT, 401, 403, 404, 409
FAILED_PRECONDITION/ABORTED/ALREADY_EXISTS, 429, 503, 504). Actions that change state need a
`reason`. See docs/console.md."""


def create_app(settings: ConsoleSettings, gateway: Gateway) -> FastAPI:
    app = FastAPI(
        title="Conveyor console API",
        version="1",
        description=DESCRIPTION,
        openapi_url="/api/openapi.json",
        docs_url=None,  # the Swagger page loads its assets from a CDN; the console serves none
        redoc_url=None,
    )
    app.state.gateway = gateway
    app.state.settings = settings
    app.add_exception_handler(ConveyorError, conveyor_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    for module in (queues, runs, workflows, events, schedules):
        app.include_router(module.router, prefix=API_PREFIX)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    _add_probes(app, gateway)
    _add_sign_in(app, settings, gateway)
    app.include_router(pages.router)

    @app.get(f"{API_PREFIX}/whoami", tags=["session"], summary="Whether this caller sent a token")
    async def whoami(request: Request) -> dict[str, Any]:
        return {
            "signed_in": token_of(request) is not None,
            "refresh_seconds": settings.refresh_seconds,
        }

    return app


def _add_probes(app: FastAPI, gateway: Gateway) -> None:
    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "SERVING"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        if gateway.ready:
            return JSONResponse({"status": "SERVING", "peers": gateway.addresses})
        return JSONResponse(
            {
                "status": "NOT_SERVING",
                "missing_peers": gateway.missing(),
                "draining": gateway.draining,
            },
            status_code=503,
        )


def _add_sign_in(app: FastAPI, settings: ConsoleSettings, gateway: Gateway) -> None:
    @app.get("/signin", response_class=HTMLResponse, include_in_schema=False)
    async def sign_in_page(request: Request, next: str = "/") -> HTMLResponse:
        return HTMLResponse(pages.sign_in(settings, _safe_next(next), ""))

    @app.post("/signin", include_in_schema=False)
    async def sign_in(request: Request) -> Response:
        # A urlencoded form of three fields: parsed here rather than with python-multipart.
        fields = parse_qs((await request.body()).decode("utf-8", errors="replace"))
        token = fields.get("token", [""])[0].strip()
        namespace = fields.get("namespace", [""])[0].strip() or settings.default_namespace
        target = _safe_next(fields.get("next", ["/"])[0])
        if target == "/":
            target = f"/namespaces/{namespace}"
        if not token:
            return HTMLResponse(pages.sign_in(settings, target, "Paste a bearer token."), 400)
        try:  # a refused token is said at once, not on the next page
            await gateway.call(
                token,
                "queue",
                "ListQueues",
                q.ListQueuesRequest(parent=f"namespaces/{namespace}", page_size=1),
            )
        except ConveyorError as error:
            if error.code == "UNAUTHENTICATED":
                return HTMLResponse(
                    pages.sign_in(
                        settings, target, f"The platform refused the token: {error.message}"
                    ),
                    401,
                )
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            TOKEN_COOKIE, token, httponly=True, samesite="strict", secure=settings.cookie_secure
        )
        return response

    @app.post("/signout", include_in_schema=False)
    async def sign_out() -> Response:
        response = RedirectResponse("/signin", status_code=303)
        response.delete_cookie(TOKEN_COOKIE)
        return response


def _safe_next(target: str) -> str:
    """Only a path of this console (no open redirect to another site)."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target
