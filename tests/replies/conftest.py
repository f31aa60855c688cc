"""The outbox tests: a controllable aiosmtpd sink, an inbox that sends to it, and a
conversation opened by a real (parsed and stored) customer mail."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from inbox_service.conversations.models import Conversation, Message
from inbox_service.core.clock import Clock, FixedClock
from inbox_service.core.db import SessionMaker, transaction
from inbox_service.inboxes.mail_settings import SmtpSettingsIn, apply_smtp_settings
from inbox_service.inboxes.models import Inbox
from inbox_service.ingest.mime import parse_message
from inbox_service.ingest.store import InboxContext, Incoming, store_batch
from inbox_service.replies.sender import ReplySender, SenderConfig
from tests.conftest import Team
from tests.ingest.conftest import dovecot, mailbox
from tests.replies.smtp_sink import SmtpSink

__all__ = ["dovecot", "mailbox"]

CUSTOMER_MAIL = (
    b"From: Ana Silva <ana@customer.test>\r\n"
    b"To: {inbox}\r\n"
    b"Subject: Parcel 42 is late\r\n"
    b"Date: Mon, 05 Jan 2026 08:00:00 +0000\r\n"
    b"Message-ID: <c1@customer.test>\r\n"
    b"References: <a0@customer.test> <b0@customer.test>\r\n"
    b"\r\n"
    b"Where is my parcel?\r\n"
)


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    server = SmtpSink()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def smtp_settings(sink: SmtpSink, **kw: object) -> SmtpSettingsIn:
    return SmtpSettingsIn(host=sink.host, port=sink.port, security="none", **kw)  # type: ignore[arg-type]


async def ingest(session: AsyncSession, inbox: Inbox, raw: bytes, *, clock: Clock) -> None:
    context = InboxContext(inbox_id=inbox.id, team_addresses=frozenset({inbox.address.lower()}))
    await store_batch(session, context, [Incoming(raw, parse_message(raw))], now=clock.now())


@dataclass
class Thread:
    inbox_id: str
    inbox_address: str
    conversation_id: str
    thread_token: str
    first_message_id: str  # our id (msg_…) of the customer's mail


@pytest.fixture
async def thread(db: SessionMaker, team: Team, sink: SmtpSink, clock: FixedClock) -> Thread:
    """Inbox A sends through the sink and has one conversation, opened by Ana."""
    async with transaction(db) as session:
        inbox = await session.get_one(Inbox, team.inbox_a)
        apply_smtp_settings(inbox, smtp_settings(sink), None)
        await ingest(
            session, inbox, CUSTOMER_MAIL.replace(b"{inbox}", inbox.address.encode()), clock=clock
        )
        conversation = await session.scalar(
            select(Conversation).where(Conversation.inbox_id == inbox.id)
        )
        assert conversation is not None
        message = await session.scalar(
            select(Message).where(Message.conversation_id == conversation.id)
        )
        assert message is not None
        return Thread(
            inbox.id, inbox.address, conversation.id, conversation.thread_token, message.id
        )


@pytest.fixture
def sender(db: SessionMaker, clock: FixedClock) -> ReplySender:
    return ReplySender(
        db, clock, None, worker_id="test-worker", config=SenderConfig(smtp_timeout=3.0)
    )
