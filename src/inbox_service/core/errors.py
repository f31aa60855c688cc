"""Errors, rendered as RFC 9457 problem details (`application/problem+json`).

    AppError (500)
    ├── Unauthorized (401)
    ├── Forbidden (403)
    ├── NotFound (404)                 # also for another inbox's ids
    ├── Conflict (409)
    ├── PreconditionFailed (412)       # stale If-Match
    ├── PayloadTooLarge (413)
    ├── Invalid (422)                  # errors: [{loc, msg}]
    │   └── IdempotencyKeyReused (422)
    └── RateLimited (429)              # Retry-After

Four handlers are installed once by `install_handlers`: AppError, request validation,
Starlette's HTTPException (so 404/405 are problem+json too) and a last-resort Exception
handler that logs and answers 500 without a stack trace.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://inbox-service.dev/problems/"


class FieldError(BaseModel):
    loc: list[str | int] = Field(description='Where the bad value is, e.g. `["body", "email"]`.')
    msg: str


class Problem(BaseModel):
    """An RFC 9457 problem detail."""

    type: str
    title: str
    status: int
    detail: str | None = None
    errors: list[FieldError] | None = None


class AppError(Exception):
    status: ClassVar[int] = 500
    slug: ClassVar[str] = "internal-error"
    title: ClassVar[str] = "Internal error"

    def __init__(
        self,
        detail: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra or {}


class Unauthorized(AppError):
    status = 401
    slug = "unauthorized"
    title = "Missing or invalid credentials"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(AppError):
    status = 403
    slug = "forbidden"
    title = "Not allowed"


class NotFound(AppError):
    status = 404
    slug = "not-found"
    title = "Not found"


class Conflict(AppError):
    status = 409
    slug = "conflict"
    title = "Conflict"


class PreconditionFailed(AppError):
    status = 412
    slug = "precondition-failed"
    title = "The object changed since you read it"


class PayloadTooLarge(AppError):
    status = 413
    slug = "payload-too-large"
    title = "Request body too large"


class Invalid(AppError):
    status = 422
    slug = "invalid"
    title = "Invalid request"

    def __init__(self, detail: str, *, loc: Sequence[str | int] | None = None) -> None:
        errors = [{"loc": list(loc), "msg": detail}] if loc is not None else None
        super().__init__(detail, extra={"errors": errors} if errors else None)


class IdempotencyKeyReused(Invalid):
    slug = "idempotency-key-reused"
    title = "Idempotency-Key reused with a different request"


class RateLimited(AppError):
    status = 429
    slug = "rate-limited"
    title = "Too many requests"


def problem_response(
    status: int,
    *,
    slug: str,
    title: str,
    detail: str | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"type": TYPE_BASE + slug, "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra or {})
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


def error_response(error: AppError) -> JSONResponse:
    return problem_response(
        error.status,
        slug=error.slug,
        title=error.title,
        detail=error.detail,
        headers=error.headers,
        extra=error.extra,
    )


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    errors = []
    for error in exc.errors():
        loc = [part for part in error.get("loc", ()) if isinstance(part, str | int)]
        errors.append({"loc": loc, "msg": str(error.get("msg", "invalid"))})
    return errors


async def _handle_app_error(_: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, AppError):
        raise exc
    if exc.status >= 500:
        log.error("internal error: %s", exc, exc_info=exc)
    return error_response(exc)


async def _handle_validation(_: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, RequestValidationError):
        raise exc
    errors = _validation_errors(exc)
    first = errors[0] if errors else {"loc": [], "msg": "invalid"}
    where = ".".join(str(part) for part in first["loc"])
    message = str(first["msg"])
    return problem_response(
        422,
        slug="invalid",
        title="Invalid request",
        detail=f"{where}: {message}" if where else message,
        extra={"errors": errors},
    )


_HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def _path_matches(template: str, path: str) -> bool:
    want, got = template.split("/"), path.split("/")
    return len(want) == len(got) and all(
        w == g or (w.startswith("{") and w.endswith("}") and g != "")
        for w, g in zip(want, got, strict=True)
    )


def _literal_segments(template: str) -> int:
    return sum(1 for part in template.split("/") if not part.startswith("{"))


def _allowed_methods(request: Request) -> set[str]:
    """Every documented method of the request's resource (405 answers must name them all).

    Only the most specific templates count, as in routing: `/v1/conversations/bulk` is its
    own resource, not `/v1/conversations/{conversation_id}` with the id "bulk"."""
    matching = [
        (template, operations)
        for template, operations in request.app.openapi().get("paths", {}).items()
        if _path_matches(template, request.scope["path"])
    ]
    if not matching:
        return set()
    most_specific = max(_literal_segments(template) for template, _ in matching)
    return {
        method.upper()
        for template, operations in matching
        if _literal_segments(template) == most_specific
        for method in operations
        if method in _HTTP_METHODS
    }


async def _handle_http(request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, StarletteHTTPException):
        raise exc
    phrase = HTTPStatus(exc.status_code).phrase
    slug = phrase.lower().replace(" ", "-").replace("'", "")
    detail = exc.detail if exc.detail != phrase else None
    headers = dict(exc.headers) if exc.headers else {}
    if exc.status_code == 405:
        # FastAPI names only the first route that matched the path (`GET` for
        # `/v1/users`), but RFC 9110 wants every method of the resource in `Allow`.
        allowed = _allowed_methods(request) or {
            m.strip() for m in headers.get("Allow", "").split(",") if m.strip()
        }
        headers["Allow"] = ", ".join(sorted(allowed))
    return problem_response(
        exc.status_code,
        slug=slug,
        title=phrase,
        detail=detail,
        headers=headers or None,
    )


# PostgreSQL refuses NUL in text ("invalid byte sequence"), whatever field it came in.
_UNSTORABLE_TEXT = {"22021", "22P05"}


async def _handle_unexpected(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, DBAPIError) and _sqlstate(exc) in _UNSTORABLE_TEXT:
        return problem_response(
            422,
            slug="invalid",
            title="Invalid request",
            detail="text must not contain NUL characters",
        )
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(500, slug="internal-error", title="Internal error")


def install_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _handle_app_error)
    app.add_exception_handler(RequestValidationError, _handle_validation)
    app.add_exception_handler(StarletteHTTPException, _handle_http)
    app.add_exception_handler(Exception, _handle_unexpected)


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` for the problem statuses a route can answer."""
    return {
        status: {
            "model": Problem,
            "description": HTTPStatus(status).phrase,
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status in statuses
    }


def _sqlstate(exc: DBAPIError) -> str | None:
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return code if isinstance(code, str) else None
