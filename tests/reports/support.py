"""A support team's week, played through the real paths with the injected clock: customer
mail is parsed and stored, replies go out through the outbox to an aiosmtpd sink,
resolving is a PATCH, reopening is the customer writing back."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import select, update

from inbox_service.conversations.models import Conversation, Message
from inbox_service.core.clock import FixedClock
from inbox_service.core.db import SessionMaker, transaction
from inbox_service.inboxes.mail_settings import apply_smtp_settings
from inbox_service.inboxes.models import Inbox
from inbox_service.ingest.mime import parse_message
from inbox_service.ingest.store import InboxContext, Incoming, store_batch
from inbox_service.replies.sender import ReplySender
from tests.conftest import Team
from tests.replies.conftest import smtp_settings
from tests.replies.smtp_sink import SmtpSink

_seq = itertools.count(1)


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 1, day, hour, minute, tzinfo=UTC)


@dataclass
class Play:
    """Drives one scenario; every step happens at `clock.now()`."""

    db: SessionMaker
    client: httpx.AsyncClient
    clock: FixedClock
    team: Team
    sender: ReplySender
    message_ids: dict[str, str] = field(default_factory=dict)

    async def setup_inbox(self, inbox_id: str, sink: SmtpSink) -> None:
        async with transaction(self.db) as session:
            inbox = await session.get_one(Inbox, inbox_id)
            apply_smtp_settings(inbox, smtp_settings(sink), None)

    async def customer_writes(
        self, inbox_id: str, when: datetime, *, reply_to: str | None = None
    ) -> str:
        """A customer mail at `when`: a new conversation, or into `reply_to`'s thread."""
        self.clock.set(when)
        n = next(_seq)
        message_id = f"report{n}@customer.test"
        subject = f"Question {n}"
        headers = [
            f"From: Customer {n} <customer{n}@customer.test>",
            "To: support@example.com",
            f"Subject: {subject}",
            f"Date: {when.strftime('%a, %d %b %Y %H:%M:%S +0000')}",
            f"Message-ID: <{message_id}>",
        ]
        if reply_to is not None:
            first = self.message_ids[reply_to]
            headers[2] = "Subject: Re: earlier question"
            headers.append(f"In-Reply-To: <{first}>")
        raw = ("\r\n".join(headers) + "\r\n\r\nHello?\r\n").encode()
        async with transaction(self.db) as session:
            context = InboxContext(inbox_id=inbox_id, team_addresses=frozenset())
            await store_batch(session, context, [Incoming(raw, parse_message(raw))], now=when)
            conversation_id = await session.scalar(
                select(Message.conversation_id).where(Message.message_id == message_id)
            )
        assert conversation_id is not None
        if reply_to is None:
            self.message_ids[conversation_id] = message_id
        else:
            assert conversation_id == reply_to, "the customer's reply must thread back"
        return conversation_id

    async def agent_replies(self, conversation_id: str, when: datetime) -> None:
        self.clock.set(when)
        response = await self.client.post(
            f"/v1/conversations/{conversation_id}/replies",
            json={"body_text": "Here is what we found."},
            headers=self.team.admin_headers,
        )
        assert response.status_code == 201, response.text
        assert await self.sender.run_once() >= 1  # out through SMTP, recorded as sent

    async def set_status(self, conversation_id: str, status: str, when: datetime) -> None:
        self.clock.set(when)
        response = await self.client.patch(
            f"/v1/conversations/{conversation_id}",
            json={"status": status},
            headers=self.team.admin_headers,
        )
        assert response.status_code == 200, response.text

    async def assign(self, conversation_id: str, user_id: str | None) -> None:
        async with transaction(self.db) as session:
            await session.execute(
                update(Conversation)
                .where(Conversation.id == conversation_id)
                .values(assignee_id=user_id)
            )


HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)
