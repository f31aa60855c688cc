"""Helpers for the SLA tests: mail into conversations at chosen times, policies."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from inbox_service.conversations.models import Message
from inbox_service.core.ids import new_id
from inbox_service.ingest.mime import parse_message
from inbox_service.ingest.store import InboxContext, Incoming, store_batch

TEAM = "agent@team.test"
_seq = itertools.count(1)

# 24/7 (no business hours): 1 h first response, 30 min next response, 8 h resolution for
# normal; warn 10 minutes before due.
POLICY: dict[str, Any] = {
    "name": "Standard",
    "targets": {
        "urgent": {"first_response": 900, "next_response": 900, "resolution": 4 * 3600},
        "normal": {"first_response": 3600, "next_response": 1800, "resolution": 8 * 3600},
    },
    "warn_before": 600,
}


def mail(
    at: datetime,
    *,
    message_id: str | None = None,
    sender: str = "Carla Customer <carla@customer.test>",
    in_reply_to: str | None = None,
    subject: str = "My order never arrived",
) -> tuple[str, bytes]:
    message_id = message_id or f"sla{next(_seq)}.{new_id('m')}@mail.test"
    headers = [
        f"From: {sender}",
        "To: support@example.com",
        f"Subject: {subject}",
        f"Date: {at.astimezone(UTC).strftime('%a, %d %b %Y %H:%M:%S +0000')}",
        f"Message-ID: <{message_id}>",
    ]
    if in_reply_to:
        headers.append(f"In-Reply-To: <{in_reply_to}>")
    return message_id, ("\r\n".join(headers) + "\r\n\r\nHello.\r\n").encode()


async def receive(
    session: AsyncSession,
    inbox_id: str,
    at: datetime,
    *,
    in_reply_to: str | None = None,
    from_team: bool = False,
    subject: str = "My order never arrived",
) -> tuple[str, str]:
    """Store one mail received at `at` (a customer's, or ours with `from_team`); its
    (Message-ID, conversation id)."""
    sender = f"Agent <{TEAM}>" if from_team else "Carla Customer <carla@customer.test>"
    message_id, raw = mail(at, sender=sender, in_reply_to=in_reply_to, subject=subject)
    context = InboxContext(inbox_id=inbox_id, team_addresses=frozenset({TEAM}))
    await store_batch(session, context, [Incoming(raw=raw, parsed=parse_message(raw))], now=at)
    conversation_id = await session.scalar(
        select(Message.conversation_id).where(Message.message_id == message_id)
    )
    assert conversation_id is not None
    return message_id, conversation_id


async def create_policy(
    client: httpx.AsyncClient, headers: dict[str, str], **changes: Any
) -> dict[str, Any]:
    response = await client.post("/v1/sla-policies", json={**POLICY, **changes}, headers=headers)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def metric(conversation: dict[str, Any], name: str) -> dict[str, Any]:
    """One metric of a conversation's `sla`."""
    found: dict[str, Any] = next(m for m in conversation["sla"]["metrics"] if m["metric"] == name)
    return found
