"""Signed rating links: `<payload>.<mac>`, both base64url, no state on our side.

The payload is `conversation_id:cycle:expires` (Unix seconds); the MAC is HMAC-SHA256
under a key derived from INBOX_SECRET_KEY (its own purpose string, so a CSAT token can
never pass for anything else signed with that secret). Every configured key verifies
(rotation); the first one signs. "Used once" is not the token's business: the database's
one rating per (conversation, cycle) is.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime

PURPOSE = b"inbox-service/csat-link/v1"
MAC_BYTES = 16  # 128 bits: unforgeable, and the link stays short


class BadToken(ValueError):
    """Malformed, tampered with, or signed with a key we do not have."""


@dataclass(frozen=True)
class LinkClaims:
    conversation_id: str
    cycle: int
    expires_at: datetime


def derive_keys(secret: str) -> list[bytes]:
    """One MAC key per comma-separated INBOX_SECRET_KEY entry, first one signing."""
    parts = [p.strip() for p in secret.split(",") if p.strip()]
    return [hmac.new(p.encode(), PURPOSE, hashlib.sha256).digest() for p in parts]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise BadToken("not base64url") from exc


def _mac(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, payload, hashlib.sha256).digest()[:MAC_BYTES]


def sign(keys: list[bytes], claims: LinkClaims) -> str:
    expires = int(claims.expires_at.timestamp())
    payload = f"{claims.conversation_id}:{claims.cycle}:{expires}".encode()
    return f"{_b64(payload)}.{_b64(_mac(keys[0], payload))}"


def verify(keys: list[bytes], token: str) -> LinkClaims:
    """The claims of a token one of `keys` signed; expiry is the caller's to check."""
    encoded, dot, mac = token.partition(".")
    if not dot or not encoded or not mac or len(token) > 256:
        raise BadToken("malformed")
    payload, given = _unb64(encoded), _unb64(mac)
    if not any(hmac.compare_digest(_mac(key, payload), given) for key in keys):
        raise BadToken("bad signature")
    try:
        conversation_id, cycle, expires = payload.decode().split(":")
        return LinkClaims(conversation_id, int(cycle), datetime.fromtimestamp(int(expires), UTC))
    except (UnicodeDecodeError, ValueError) as exc:  # only if a key signed garbage
        raise BadToken("bad payload") from exc
