"""Auto-acknowledgement of new conversations, RFC 3834 rules, through the real ingest path."""

from __future__ import annotations

from datetime import timedelta
from email import message_from_bytes, policy

import httpx
import pytest
from sqlalchemy import func, select

from inbox_service.conversations.models import Conversation, Message
from inbox_service.core.clock import FixedClock
from inbox_service.core.db import SessionMaker, transaction
from inbox_service.inboxes.models import Inbox
from inbox_service.replies.models import Reply
from inbox_service.replies.sender import ReplySender
from tests.conftest import Team
from tests.replies.conftest import Thread, ingest
from tests.replies.smtp_sink import SmtpSink

_seq = iter(range(1000, 100_000))


def mail(
    *headers: str, sender: str = "Bea Costa <bea@customer.test>", domain: str = "customer.test"
) -> bytes:
    n = next(_seq)
    lines = [
        f"From: {sender}",
        "To: support@example.com",
        f"Subject: Question {n}",
        "Date: Mon, 05 Jan 2026 08:00:00 +0000",
        f"Message-ID: <q{n}@{domain}>",
        *headers,
    ]
    return ("\r\n".join(lines) + "\r\n\r\nHello?\r\n").encode()


@pytest.fixture
async def acking(client: httpx.AsyncClient, team: Team, thread: Thread) -> str:
    """Inbox A acknowledges new conversations (configured through the API)."""
    template = await client.post(
        "/v1/templates",
        json={
            "name": "ack",
            "body": 'Hi {{ contact.first_name | default("there") }}, we got your message '
            'and answer within {{ conversation.expected_response | default("one business day") }}.',
            "inbox_id": thread.inbox_id,
        },
        headers=team.admin_headers,
    )
    assert template.status_code == 201, template.text
    patched = await client.patch(
        f"/v1/inboxes/{thread.inbox_id}",
        json={
            "auto_ack": {
                "enabled": True,
                "template_id": template.json()["id"],
                "window_seconds": 3600,
            }
        },
        headers=team.admin_headers,
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["auto_ack"]["enabled"] is True
    return str(template.json()["id"])


async def receive(db: SessionMaker, thread: Thread, raw: bytes, clock: FixedClock) -> None:
    async with transaction(db) as session:
        await ingest(session, await session.get_one(Inbox, thread.inbox_id), raw, clock=clock)


async def acks(db: SessionMaker) -> list[Reply]:
    async with transaction(db) as session:
        return list(await session.scalars(select(Reply).where(Reply.kind == "auto_ack")))


async def test_a_normal_new_mail_gets_one_acknowledgement(
    acking: str,
    db: SessionMaker,
    thread: Thread,
    sink: SmtpSink,
    sender: ReplySender,
    clock: FixedClock,
) -> None:
    await receive(db, thread, mail(), clock)
    await sender.run_once()
    [received] = sink.received
    assert received.rcpt_tos == ["bea@customer.test"]
    msg = message_from_bytes(received.raw, policy=policy.default)
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["X-Auto-Response-Suppress"] == "All"
    assert msg["Subject"].startswith("Re: Question ")
    assert msg["In-Reply-To"].startswith("<q")
    assert msg.get_content().strip() == (
        "Hi Bea, we got your message and answer within one business day."
    )
    [ack] = await acks(db)
    async with transaction(db) as session:
        conversation = await session.get_one(Conversation, ack.conversation_id)
        # an acknowledgement is no answer: the customer still waits, no first response
        assert conversation.waiting_since is not None
        assert conversation.first_response_at is None
        assert conversation.reply_count == 0
        assert conversation.message_count == 2


@pytest.mark.parametrize(
    ("headers", "sender"),
    [
        (("Auto-Submitted: auto-replied",), None),
        (("Auto-Submitted: auto-generated",), None),
        (("Precedence: bulk",), None),
        (("Precedence: list",), None),
        (("List-Id: <news.lists.customer.test>",), None),
        (("List-Unsubscribe: <mailto:unsubscribe@customer.test>",), None),
        (("X-Autoreply: yes",), None),
        (("X-Auto-Response-Suppress: All",), None),
        (("Return-Path: <>",), None),
        ((), "MAILER-DAEMON <mailer-daemon@customer.test>"),
        ((), "No Reply <no-reply@customer.test>"),
    ],
)
async def test_automatic_and_list_mail_is_stored_but_not_acknowledged(
    acking: str,
    db: SessionMaker,
    thread: Thread,
    clock: FixedClock,
    headers: tuple[str, ...],
    sender: str | None,
) -> None:
    raw = mail(*headers, sender=sender) if sender else mail(*headers)
    await receive(db, thread, raw, clock)
    assert await acks(db) == []
    async with transaction(db) as session:
        stored = await session.scalar(
            select(func.count()).select_from(Message).where(Message.inbox_id == thread.inbox_id)
        )
        assert stored == 2  # Ana's first mail and this one


async def test_mail_from_our_own_addresses_or_domain_is_not_acknowledged(
    acking: str, db: SessionMaker, thread: Thread, team: Team, clock: FixedClock
) -> None:
    async with transaction(db) as session:
        other = await session.get_one(Inbox, team.inbox_b)
    await receive(db, thread, mail(sender=f"Other <{other.address}>"), clock)
    await receive(
        db, thread, mail(sender="Loop <loop@elsewhere.test>", domain="example.com"), clock
    )
    assert await acks(db) == []


async def test_one_acknowledgement_per_sender_per_window(
    acking: str, db: SessionMaker, thread: Thread, clock: FixedClock
) -> None:
    await receive(db, thread, mail(), clock)
    clock.advance(minutes=30)
    await receive(db, thread, mail(), clock)  # a second new conversation, same sender
    assert len(await acks(db)) == 1
    await receive(db, thread, mail(sender="Caio <caio@customer.test>"), clock)
    assert len(await acks(db)) == 2
    clock.advance(timedelta(minutes=31))
    await receive(db, thread, mail(), clock)
    assert len(await acks(db)) == 3


async def test_off_by_default_and_replies_in_a_thread_are_not_new(
    db: SessionMaker, thread: Thread, clock: FixedClock
) -> None:
    await receive(db, thread, mail(), clock)
    assert await acks(db) == []


async def test_an_unknown_template_cannot_be_configured(
    client: httpx.AsyncClient, team: Team, thread: Thread
) -> None:
    patched = await client.patch(
        f"/v1/inboxes/{thread.inbox_id}",
        json={"auto_ack": {"enabled": True, "template_id": "tpl_nope"}},
        headers=team.admin_headers,
    )
    assert patched.status_code == 422
    assert patched.json()["errors"][0]["loc"] == ["body", "auto_ack", "template_id"]
