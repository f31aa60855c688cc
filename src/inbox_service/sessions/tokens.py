"""The session token format, and where a request's credential comes from.

Tokens look like `ist_<token_id>_<secret>`: `token_id` is the indexed lookup prefix and
`secret` 256 random bits stored only as a SHA-256 hash. The `ist_` prefix tells them from
API keys (`isk_`) before any database work, and lets secret scanners match them.

A browser's `EventSource` cannot send headers, so the event stream also takes the token
as `?access_token=`. Only there, and only a session token: an API key in a URL would end
up in proxy and browser history logs, so it is refused outright (401).
"""

from __future__ import annotations

import re
import secrets

from fastapi import Request

from inbox_service.core.auth import bearer_token
from inbox_service.core.errors import Unauthorized

TOKEN_PREFIX = "ist_"  # noqa: S105 (a prefix, not a secret)
ACCESS_TOKEN_PARAM = "access_token"  # noqa: S105 (a parameter name)
_TOKEN_RE = re.compile(r"^ist_([0-9a-z]{16})_([0-9a-f]{64})$")
# request.state flag set by the routes that accept `?access_token=`.
_QUERY_ALLOWED = "access_token_allowed"


def new_token() -> tuple[str, str, str]:
    """(token_id, secret, token): the token is shown to its owner once and never stored."""
    token_id = "".join(secrets.choice("0123456789abcdefghijklmnopqrstuvwxyz") for _ in range(16))
    secret = secrets.token_hex(32)
    return token_id, secret, f"{TOKEN_PREFIX}{token_id}_{secret}"


def is_session_token(token: str) -> bool:
    return token.startswith(TOKEN_PREFIX)


def parse_token(token: str) -> tuple[str, str] | None:
    """(token_id, secret) of a well-formed session token; None otherwise."""
    match = _TOKEN_RE.match(token)
    return None if match is None else (match.group(1), match.group(2))


def allow_query_token(request: Request) -> None:
    """Let this request authenticate with `?access_token=<session token>`."""
    setattr(request.state, _QUERY_ALLOWED, True)


def request_credential(request: Request) -> str:
    """The request's bearer credential: the `Authorization` header, or `?access_token=`
    where allowed (the header wins when both are sent)."""
    if not getattr(request.state, _QUERY_ALLOWED, False):
        return bearer_token(request)
    in_url = request.query_params.get(ACCESS_TOKEN_PARAM)
    if in_url is not None and not is_session_token(in_url.strip()):
        raise Unauthorized(
            "`access_token` takes a session token only: never put an API key in a URL"
        )
    if in_url is None or "authorization" in request.headers:
        return bearer_token(request)
    return in_url.strip()
