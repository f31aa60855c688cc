"""Per-key rate limits, shared by every API replica through PostgreSQL.

A fixed one-minute window per bucket (the API key's id, a browser session token's id, or
the client address for requests without a genuine one), counted with one upsert on an
UNLOGGED table: no WAL, so it is cheap, and losing the counters in a database crash only
forgives a minute.

"Genuine" is checked in that same statement (key id and secret hash exist): a key's
checksum is public, so a well-formed key proves nothing. Trusting it would let anyone
escape the per-address limit with fresh made-up keys, or use up somebody else's bucket
by sending their key id with a wrong secret.
Answers carry `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`; over the
limit the answer is 429 with `Retry-After`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from urllib.parse import parse_qs

from sqlalchemy import Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inbox_service.core.asgi import header, send_bytes
from inbox_service.core.auth import hash_secret, parse_api_key
from inbox_service.core.clock import Clock
from inbox_service.core.db import Base, SessionMaker, transaction
from inbox_service.core.errors import PROBLEM_JSON, TYPE_BASE
from inbox_service.sessions.tokens import parse_token

WINDOW = timedelta(minutes=1)


class RateLimitBucket(Base):
    __tablename__ = "rate_limit_buckets"
    __table_args__ = {"prefixes": ["UNLOGGED"]}

    bucket: Mapped[str] = mapped_column(String(80), primary_key=True)
    window_start: Mapped[datetime] = mapped_column(primary_key=True)
    hits: Mapped[int] = mapped_column(Integer)


_COUNT = text(
    """
    INSERT INTO rate_limit_buckets (bucket, window_start, hits)
    SELECT CASE
               WHEN EXISTS (
                   SELECT 1 FROM api_keys WHERE key_id = :key_id AND secret_hash = :secret_hash
               ) THEN 'key:' || :key_id
               WHEN EXISTS (
                   SELECT 1 FROM session_tokens
                   WHERE token_id = :token_id AND secret_hash = :token_hash
               ) THEN 'tok:' || :token_id
               ELSE :address_bucket
           END,
           :window,
           1
    ON CONFLICT (bucket, window_start)
    DO UPDATE SET hits = rate_limit_buckets.hits + 1
    RETURNING hits
    """
)


def bucket_params(scope: Scope) -> dict[str, str | None]:
    """The key's (or browser session token's) id and secret hash, None without a
    well-formed one, and the address bucket."""
    credential = (header(scope, b"authorization") or "").partition(" ")[2].strip()
    if not credential:  # the event stream also takes `?access_token=`
        query = parse_qs(bytes(scope.get("query_string", b"")).decode("latin-1"))
        credential = (query.get("access_token") or [""])[0]
    parsed = parse_api_key(credential)
    token = parse_token(credential)
    client = scope.get("client")
    return {
        "key_id": parsed[0] if parsed else None,
        "secret_hash": hash_secret(parsed[1]) if parsed else None,
        "token_id": token[0] if token else None,
        "token_hash": hash_secret(token[1]) if token else None,
        "address_bucket": f"ip:{client[0] if client else 'unknown'}",
    }


class RateLimitMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        limit: int,
        sessionmaker: Callable[[], SessionMaker],
        clock: Callable[[], Clock],
    ) -> None:
        self.app = app
        self.limit = limit
        self.sessionmaker = sessionmaker
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.limit <= 0 or scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        now = self.clock().now()
        window = now.replace(second=0, microsecond=0)
        async with transaction(self.sessionmaker()) as session:
            hits = await session.execute(_COUNT, {**bucket_params(scope), "window": window})
            count = int(hits.scalar_one())
        reset = max(1, int((window + WINDOW - now).total_seconds() + 0.999))
        headers = [
            ("RateLimit-Limit", str(self.limit)),
            ("RateLimit-Remaining", str(max(0, self.limit - count))),
            ("RateLimit-Reset", str(reset)),
        ]
        if count > self.limit:
            problem = {
                "type": TYPE_BASE + "rate-limited",
                "title": "Too many requests",
                "status": 429,
                "detail": f"more than {self.limit} requests a minute; retry in {reset} s",
            }
            await send_bytes(
                send,
                429,
                json.dumps(problem).encode(),
                [("content-type", PROBLEM_JSON), ("Retry-After", str(reset)), *headers],
            )
            return

        extra = [(k.lower().encode(), v.encode()) for k, v in headers]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)
