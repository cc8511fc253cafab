"""What every route shares: who is calling (the bearer token), the bodies of actions, and
how a failed gRPC call or a bad request becomes an HTTP error.

Errors are one JSON shape, for the pages and for scripts:

    {"error": {"status": 400, "code": "INVALID_ARGUMENT", "message": "...",
               "field_violations": [{"field": "reason", "description": "..."}],
               "reason": "", "correlation_id": "..."}}
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from conveyor_console.gateway import Gateway
from conveyor_sdk._errors import ConveyorError, FieldViolation, InvalidArgument

TOKEN_COOKIE = "conveyor_token"
#: Who the services record for an action when authentication is off (with it on, the
#: services record the token's principal; conveyor_core.auth.actor).
ACTOR = "console"
MAX_REASON_LENGTH = 1000

HTTP_STATUS = {
    "INVALID_ARGUMENT": 400,
    "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "FAILED_PRECONDITION": 409,
    "ABORTED": 409,
    "RESOURCE_EXHAUSTED": 429,
    "CANCELLED": 499,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}


def token_of(request: Request) -> str | None:
    """The bearer token: an Authorization header (scripts) or the sign-in cookie (pages)."""
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return request.cookies.get(TOKEN_COOKIE) or None


@dataclass
class Caller:
    """The gateway, called with this request's token."""

    gateway: Gateway
    token: str | None

    async def __call__(self, stub: str, method: str, request: Any) -> Any:
        return await self.gateway.call(self.token, stub, method, request)


def _caller(request: Request) -> Caller:
    return Caller(request.app.state.gateway, token_of(request))


CallerDep = Annotated[Caller, Depends(_caller)]


class ReasonBody(BaseModel):
    """An action that changes state: why, recorded with the change."""

    reason: str = Field(
        ...,
        max_length=MAX_REASON_LENGTH,
        description="Why (required; recorded with the change).",
        examples=["checked the payment dashboard"],
    )

    @field_validator("reason")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("required: say why")
        return value.strip()


class ResolveBody(ReasonBody):
    resolution: Literal["applied", "failed", "skip"] = Field(
        ..., description="applied: it happened; failed: it did not (retried); skip: drop it."
    )
    result_json: str = Field(
        "", max_length=64 * 1024, description="With applied: the mutation's result as JSON."
    )


class RedriveBody(ReasonBody):
    error_type: str = Field("", description="Only dead orders that failed with this type.")
    max_work_orders: int = Field(0, ge=0, description="At most this many (0: the queue's cap).")


def error_body(
    status: int,
    code: str,
    message: str,
    violations: list[dict[str, str]] | None = None,
    **extra: str,
) -> dict[str, Any]:
    return {
        "error": {
            "status": status,
            "code": code,
            "message": message,
            "field_violations": violations or [],
            "reason": extra.get("reason", ""),
            "correlation_id": extra.get("correlation_id", ""),
        }
    }


def from_conveyor_error(error: ConveyorError) -> tuple[int, dict[str, Any]]:
    status = HTTP_STATUS.get(error.code, 500)
    violations = [{"field": v.field, "description": v.description} for v in error.field_violations]
    return status, error_body(
        status,
        error.code,
        error.message,
        violations,
        reason=error.reason,
        correlation_id=error.correlation_id,
    )


async def conveyor_error_handler(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, ConveyorError)
    status, body = from_conveyor_error(error)
    return JSONResponse(body, status_code=status)


async def validation_error_handler(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    violations = []
    for item in error.errors():
        loc = [str(p) for p in item.get("loc", ()) if p not in ("body", "query", "path")]
        message = str(item.get("msg", "invalid")).removeprefix("Value error, ")
        if item.get("type") == "missing":
            message = "required" + (": say why" if loc == ["reason"] else "")
        violations.append({"field": ".".join(loc) or "body", "description": message})
    text = "; ".join(f"{v['field']}: {v['description']}" for v in violations)
    body = error_body(
        400, "INVALID_ARGUMENT", f"invalid request: {text}; nothing was changed", violations
    )
    return JSONResponse(body, status_code=400)


async def http_error_handler(request: Request, error: Exception) -> Response:
    """Unknown paths and methods: the API's error shape under /api, a short page elsewhere."""
    assert isinstance(error, StarletteHTTPException)
    code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(error.status_code, "HTTP_ERROR")
    if request.url.path.startswith("/api/"):
        message = f"{request.method} {request.url.path}: {error.detail}"
        return JSONResponse(
            error_body(error.status_code, code, message), status_code=error.status_code
        )
    text = html.escape(f"{error.status_code} {error.detail}: {request.url.path}")
    return HTMLResponse(
        f'<!doctype html><title>{text}</title><p>{text}</p><p><a href="/">Conveyor console</a></p>',
        status_code=error.status_code,
    )


def bad_request(field: str, description: str) -> ConveyorError:
    """A request the console refuses itself, as the services would (INVALID_ARGUMENT)."""
    return InvalidArgument(
        message=f"{field}: {description}",
        code="INVALID_ARGUMENT",
        field_violations=(FieldViolation(field, description),),
    )
