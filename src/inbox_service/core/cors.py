"""CORS for browser frontends: only the origins in `CORS_ALLOW_ORIGINS`, only on `/v1/*`.

A request from any other origin (or to another path) goes straight to the app, so it gets
no CORS header at all, not even on a refused preflight, and the browser keeps the page from
reading the answer. Credentials are bearer tokens in `Authorization`, never cookies, so
`Access-Control-Allow-Credentials` is not sent; `*` is refused by the settings anyway.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from inbox_service.core.asgi import header

ALLOW_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
ALLOW_HEADERS = ("Authorization", "Content-Type", "If-Match", "Idempotency-Key", "Last-Event-ID")
EXPOSE_HEADERS = (
    "ETag",
    "Location",
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
    "Retry-After",
)
MAX_AGE_SECONDS = 600
PATH_PREFIX = "/v1/"


class ApiCorsMiddleware:
    def __init__(self, app: ASGIApp, *, origins: Sequence[str]) -> None:
        self.app = app
        self.origins = frozenset(origins)
        self.cors = CORSMiddleware(
            app,
            allow_origins=sorted(self.origins),
            allow_methods=ALLOW_METHODS,
            allow_headers=ALLOW_HEADERS,
            expose_headers=EXPOSE_HEADERS,
            max_age=MAX_AGE_SECONDS,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["path"].startswith(PATH_PREFIX)
            and header(scope, b"origin") in self.origins
        ):
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)
