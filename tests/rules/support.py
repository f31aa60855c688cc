"""Helpers for the rules tests: mail as bytes, storing it as ingest does, rules via the API."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import select

from inbox_service.conversations.models import Message
from inbox_service.core.db import SessionMaker, transaction
from inbox_service.inboxes.models import Inbox
from inbox_service.ingest.mime import parse_message
from inbox_service.ingest.store import InboxContext, Incoming, store_batch

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)  # the FixedClock's start
_seq = itertools.count(1)


def mail(
    *,
    subject: str = "Hello",
    body: str | None = "Hello there.",
    html: str | None = None,
    sender: str = "Ana Lopez <ana@customer.test>",
    message_id: str | None = None,
    in_reply_to: str | None = None,
    date: datetime = NOW - timedelta(hours=1),
) -> tuple[bytes, str]:
    """(raw bytes, Message-ID without brackets). `html` alone makes an HTML-only mail."""
    mid = message_id or f"rules{next(_seq)}@customer.test"
    headers = [
        f"From: {sender}",
        "To: support@example.com",
        f"Subject: {subject}",
        f"Date: {date.strftime('%a, %d %b %Y %H:%M:%S +0000')}",
        f"Message-ID: <{mid}>",
        "MIME-Version: 1.0",
    ]
    if in_reply_to:
        headers.append(f"In-Reply-To: <{in_reply_to}>")
    if body is not None:
        headers.append("Content-Type: text/plain; charset=utf-8")
        content = body
    else:
        headers.append("Content-Type: text/html; charset=utf-8")
        content = html or ""
    headers.append("Content-Transfer-Encoding: 8bit")
    return ("\r\n".join(headers) + "\r\n\r\n" + content + "\r\n").encode(), mid


async def ingest(db: SessionMaker, inbox_id: str, *raws: bytes, now: datetime = NOW) -> None:
    """Store mail as the IMAP sync does: one batch, one transaction."""
    async with transaction(db) as session:
        inbox = await session.get_one(Inbox, inbox_id)
        context = InboxContext(inbox_id=inbox_id, team_addresses=frozenset({inbox.address}))
        items = [Incoming(raw=raw, parsed=parse_message(raw)) for raw in raws]
        await store_batch(session, context, items, now=now)


async def conversation_of(db: SessionMaker, message_id: str) -> str:
    async with transaction(db) as session:
        found = await session.scalar(
            select(Message.conversation_id).where(Message.message_id == message_id)
        )
    assert found is not None
    return found


async def make_rule(
    client: httpx.AsyncClient, headers: dict[str, str], **fields: Any
) -> dict[str, Any]:
    fields.setdefault("name", "rule")
    response = await client.post("/v1/priority-rules", json=fields, headers=headers)
    assert response.status_code == 201, response.text
    rule: dict[str, Any] = response.json()
    return rule
