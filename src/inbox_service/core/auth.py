"""Who is calling, and the one helper that scopes every query to what they may see.

API keys look like `isk_<key_id>_<secret><crc>`: `key_id` is the indexed lookup prefix,
`secret` is 256 random bits stored only as a SHA-256 hash (a fast hash is right for a
random secret of that size), and `crc` is a CRC32 of the rest so a typo or truncated key
is refused without a database round trip. Secret scanners can match the `isk_` prefix.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import Request
from sqlalchemy import ColumnElement, false, true
from sqlalchemy.ext.asyncio import AsyncSession

from inbox_service.core.errors import Forbidden, NotFound, Unauthorized

Role = Literal["admin", "agent"]

KEY_PREFIX = "isk"
_KEY_RE = re.compile(r"^isk_([0-9a-z]{16})_([0-9a-f]{64})([0-9a-f]{8})$")


@dataclass(frozen=True)
class Caller:
    """The user a request acts as. `inbox_ids` is None for admins (they see every inbox)."""

    user_id: str
    role: Role
    inbox_ids: frozenset[str] | None
    key_id: str | None = None
    session_token_id: str | None = None  # set when a browser session token authenticated

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def can_see(self, inbox_id: str | None) -> bool:
        if self.inbox_ids is None:
            return True
        return inbox_id is not None and inbox_id in self.inbox_ids

    def scope(self, inbox_column: Any) -> ColumnElement[bool]:
        """SQL condition limiting `inbox_column` to the caller's inboxes: the one scoping helper."""
        if self.inbox_ids is None:
            return true()
        if not self.inbox_ids:
            return false()
        condition: ColumnElement[bool] = inbox_column.in_(sorted(self.inbox_ids))
        return condition

    def require_visible(self, inbox_id: str | None) -> None:
        """404 (never 403: no existence oracle) for an inbox the caller cannot see."""
        if not self.can_see(inbox_id):
            raise NotFound("no such object")

    def require_admin(self) -> None:
        if not self.is_admin:
            raise Forbidden("this needs an admin API key")


@dataclass(frozen=True)
class NewKey:
    key_id: str
    secret_hash: str
    token: str


def new_api_key() -> NewKey:
    """A fresh key; `token` is shown to its owner once and never stored."""
    key_id = "".join(secrets.choice("0123456789abcdefghijklmnopqrstuvwxyz") for _ in range(16))
    secret = secrets.token_hex(32)
    body = f"{KEY_PREFIX}_{key_id}_{secret}"
    token = f"{body}{zlib.crc32(body.encode()):08x}"
    return NewKey(key_id=key_id, secret_hash=hash_secret(secret), token=token)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_api_key(token: str) -> tuple[str, str] | None:
    """(key_id, secret) of a well-formed key whose checksum matches; None otherwise."""
    match = _KEY_RE.match(token)
    if match is None:
        return None
    key_id, secret, crc = match.groups()
    body = f"{KEY_PREFIX}_{key_id}_{secret}"
    if not hmac.compare_digest(f"{zlib.crc32(body.encode()):08x}", crc):
        return None
    return key_id, secret


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization")
    if not header:
        raise Unauthorized("send `Authorization: Bearer <api key>`")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("send `Authorization: Bearer <api key>`")
    return token.strip()


Authenticator = Callable[[AsyncSession, Request], Awaitable[Caller]]
