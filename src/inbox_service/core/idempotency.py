r"""`Idempotency-Key` on POST: the same key and body within 24 h replays the first answer.

States of a key, stored per credential (a hash of the `Authorization` header, so only the
same caller can replay an answer):

    (none) --claim--> in progress --answer < 500--> done (answer stored, replayed)
                          |  \--answer >= 500 or crash in the app--> (none): retry runs again
                          \--lease expired (process died)--> claimable again (a new claim)

A second request with the key while the first is in progress gets 409; a request with
the key and another method, path or body gets 422. The answer is stored after the app's
own transaction committed, so a crash exactly between the two lets a retry run again.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import Integer, LargeBinary, String, delete, select, update
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.orm import Mapped, mapped_column
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inbox_service.core.asgi import CapturedResponse, header, replay_body, send_bytes
from inbox_service.core.clock import Clock
from inbox_service.core.db import Base, SessionMaker, transaction
from inbox_service.core.errors import PROBLEM_JSON, TYPE_BASE

RETENTION = timedelta(hours=24)
LEASE = timedelta(minutes=5)
MAX_KEY_LENGTH = 255
# What describes the answer itself; a 401 must carry WWW-Authenticate and a 405 Allow.
_REPLAYED_HEADERS = {b"content-type", b"location", b"etag", b"www-authenticate", b"allow"}


class IdempotencyKey(Base):
    __tablename__ = "idempotency_keys"

    owner: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(MAX_KEY_LENGTH), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(index=True)
    locked_until: Mapped[datetime | None] = mapped_column()
    # Who runs the request now: only that claim may store its answer or give the key back.
    claim: Mapped[str | None] = mapped_column(String(32))
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_headers: Mapped[list[list[str]] | None] = mapped_column(JSONB)
    response_body: Mapped[bytes | None] = mapped_column(LargeBinary)


async def _problem(
    send: Send, status: int, slug: str, title: str, detail: str, *, invalid_header: bool = False
) -> None:
    body: dict[str, object] = {
        "type": TYPE_BASE + slug,
        "title": title,
        "status": status,
        "detail": detail,
    }
    if invalid_header:  # a validation problem: `errors` like every other 422 of that kind
        body["errors"] = [{"loc": ["header", "Idempotency-Key"], "msg": detail}]
    await send_bytes(send, status, json.dumps(body).encode(), [("content-type", PROBLEM_JSON)])


class IdempotencyMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        sessionmaker: Callable[[], SessionMaker],
        clock: Callable[[], Clock],
    ) -> None:
        self.app = app
        self.sessionmaker = sessionmaker
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = header(scope, b"idempotency-key") if scope["type"] == "http" else None
        if key is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        if not 1 <= len(key) <= MAX_KEY_LENGTH:
            await _problem(
                send,
                422,
                "invalid",
                "Invalid request",
                f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters",
                invalid_header=True,
            )
            return

        body = await _read_body(receive)
        owner = hashlib.sha256((header(scope, b"authorization") or "").encode()).hexdigest()
        fingerprint = hashlib.sha256(
            b"\0".join([scope["path"].encode(), scope.get("query_string", b""), body])
        ).hexdigest()

        claim = secrets.token_hex(16)
        claimed, existing = await self._claim(owner, key, fingerprint, claim)
        if not claimed:
            if existing is None or existing.request_hash != fingerprint:
                await _problem(
                    send,
                    422,
                    "idempotency-key-reused",
                    "Idempotency-Key reused with a different request",
                    "this Idempotency-Key was used with another path or body in the last 24 h",
                )
            elif existing.response_status is None:
                await _problem(
                    send,
                    409,
                    "idempotent-request-in-progress",
                    "Request in progress",
                    "a request with this Idempotency-Key is still being processed; retry later",
                )
            else:
                headers = [(k, v) for k, v in existing.response_headers or []]
                headers.append(("Idempotent-Replayed", "true"))
                await send_bytes(
                    send, existing.response_status, existing.response_body or b"", headers
                )
            return

        captured = CapturedResponse()

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                captured.status = message["status"]
                captured.headers = list(message.get("headers", []))
            elif message["type"] == "http.response.body":
                captured.body += message.get("body", b"")
                captured.streaming = captured.streaming or message.get("more_body", False)
            await send(message)

        try:
            await self.app(scope, replay_body(body), capture)
        finally:
            await self._finish(owner, key, claim, captured)

    async def _claim(
        self, owner: str, key: str, fingerprint: str, claim: str
    ) -> tuple[bool, IdempotencyKey | None]:
        now = self.clock().now()
        async with transaction(self.sessionmaker()) as session:
            inserted = await session.scalar(
                insert(IdempotencyKey)
                .values(
                    owner=owner,
                    key=key,
                    request_hash=fingerprint,
                    created_at=now,
                    locked_until=now + LEASE,
                    claim=claim,
                )
                .on_conflict_do_nothing()
                .returning(IdempotencyKey.key)
            )
            if inserted is not None:
                return True, None
            row = await session.scalar(
                select(IdempotencyKey)
                .where(IdempotencyKey.owner == owner, IdempotencyKey.key == key)
                .with_for_update()
            )
            if row is None:  # deleted between our insert and select: treat as in progress
                return False, None
            expired = row.created_at < now - RETENTION
            abandoned = row.response_status is None and (
                row.locked_until is None or row.locked_until < now
            )
            if expired or (abandoned and row.request_hash == fingerprint):
                row.request_hash = fingerprint
                row.created_at = now if expired else row.created_at
                row.locked_until = now + LEASE
                row.claim = claim
                row.response_status = row.response_headers = row.response_body = None
                return True, None
            return False, row

    async def _finish(self, owner: str, key: str, claim: str, captured: CapturedResponse) -> None:
        # Guarded by the claim: a request that outlived its lease and was taken over by a
        # retry must not overwrite or delete the retry's row.
        where = (
            IdempotencyKey.owner == owner,
            IdempotencyKey.key == key,
            IdempotencyKey.claim == claim,
        )
        async with transaction(self.sessionmaker()) as session:
            if captured.status == 0 or captured.status >= 500 or captured.streaming:
                await session.execute(delete(IdempotencyKey).where(*where))
                return
            headers = [
                [k.decode("latin-1"), v.decode("latin-1")]
                for k, v in captured.headers
                if k.lower() in _REPLAYED_HEADERS
            ]
            await session.execute(
                update(IdempotencyKey)
                .where(*where)
                .values(
                    response_status=captured.status,
                    response_headers=headers,
                    response_body=bytes(captured.body),
                    locked_until=None,
                    claim=None,
                )
            )


async def _read_body(receive: Receive) -> bytes:
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    return bytes(body)
