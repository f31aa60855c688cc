"""Standard Webhooks signatures: `v1,` + base64 HMAC-SHA256 of "{id}.{timestamp}.{body}"."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence
from secrets import token_bytes

PREFIX = "whsec_"
MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64


def generate_secret() -> str:
    """A new `whsec_` secret of 32 random bytes."""
    return PREFIX + base64.b64encode(token_bytes(32)).decode("ascii")


def parse_secret(secret: str) -> bytes:
    """The key inside a `whsec_<base64>` secret; ValueError says what is wrong."""
    if not secret.startswith(PREFIX):
        raise ValueError("webhook secret must start with 'whsec_'")
    encoded = secret[len(PREFIX) :]
    try:
        # Accept unpadded base64 as the reference libraries do; reject any other character.
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except binascii.Error:
        raise ValueError("webhook secret must be 'whsec_' followed by base64") from None
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise ValueError(
            f"webhook secret must decode to {MIN_SECRET_BYTES}..{MAX_SECRET_BYTES} bytes, "
            f"not {len(key)}"
        )
    return key


def sign(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """One space-separated `v1,<base64>` signature per secret (two while rotating)."""
    if isinstance(secrets, str):  # a str is a Sequence[str]: each character would be a "secret"
        raise TypeError("sign() takes a sequence of secrets, not one string")
    if not secrets:
        raise ValueError("at least one secret is needed to sign")
    # The id is part of the signed content and a header value: a "." would make the
    # content ambiguous, and CR/LF would split the header.
    if not msg_id or "." in msg_id or any(c.isspace() for c in msg_id):
        raise ValueError(f"invalid webhook message id {msg_id!r}")
    content = f"{msg_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1," + base64.b64encode(hmac.digest(parse_secret(s), content, hashlib.sha256)).decode()
        for s in secrets
    )


def headers(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers for one attempt (the timestamp is per attempt)."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secrets, msg_id, timestamp, body),
    }
