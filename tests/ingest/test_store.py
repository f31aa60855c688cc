"""Storing and threading fetched mail (no IMAP here: the parser feeds `store_batch`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from inbox_service.conversations.models import Conversation, Message, MessageRaw
from inbox_service.core.events import Event
from inbox_service.ingest.mime import parse_message
from inbox_service.ingest.store import InboxContext, Incoming, StoreResult, store_batch
from tests.support.factories import make_inbox

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def mail(
    *,
    subject: str = "Order 1234 never arrived",
    sender: str = "Ana Lopez <ana@customer.test>",
    to: str = "support@example.com",
    message_id: str | None = "<m1@customer.test>",
    in_reply_to: str | None = None,
    references: str | None = None,
    date: datetime = NOW - timedelta(hours=1),
    extra: str = "",
    body: str = "Hello, where is my parcel?",
) -> bytes:
    headers = [
        f"From: {sender}",
        f"To: {to}",
        f"Subject: {subject}",
        f"Date: {date.strftime('%a, %d %b %Y %H:%M:%S +0000')}",
    ]
    if message_id:
        headers.append(f"Message-ID: {message_id}")
    if in_reply_to:
        headers.append(f"In-Reply-To: {in_reply_to}")
    if references:
        headers.append(f"References: {references}")
    if extra:
        headers.append(extra.strip())
    return ("\r\n".join(headers) + "\r\n\r\n" + body + "\r\n").encode()


@pytest.fixture
async def inbox(session: AsyncSession) -> InboxContext:
    created = await make_inbox(session)
    return InboxContext(
        inbox_id=created.id,
        team_addresses=frozenset({created.address, "agent@example.com"}),
    )


async def store(session: AsyncSession, inbox: InboxContext, *raws: bytes) -> StoreResult:
    items = [Incoming(raw=raw, parsed=parse_message(raw)) for raw in raws]
    return await store_batch(session, inbox, items, now=NOW)


async def message(session: AsyncSession, inbox: InboxContext, message_id: str) -> Message:
    return await session.scalar(
        select(Message).where(Message.inbox_id == inbox.inbox_id, Message.message_id == message_id)
    )  # type: ignore[return-value]


class TestStoreBatch:
    async def test_new_mail_opens_a_conversation_with_its_contact_and_events(
        self, session: AsyncSession, inbox: InboxContext
    ) -> None:
        result = await store(session, inbox, mail())
        assert (result.stored, result.conversations_created) == (1, 1)
        stored = await message(session, inbox, "m1@customer.test")
        conversation = await session.get_one(Conversation, stored.conversation_id)
        assert stored.threaded_by == "new"
        assert conversation.subject == "Order 1234 never arrived"
        assert conversation.waiting_since == NOW - timedelta(hours=1)
        assert conversation.status == "open"
        raw = await session.get_one(MessageRaw, stored.id)
        assert raw.raw == mail()
        types = await session.scalars(
            select(Event.type).where(Event.conversation_id == conversation.id).order_by(Event.id)
        )
        assert list(types) == ["conversation.created", "message.received"]

    async def test_the_same_mail_twice_is_stored_once(
        self, session: AsyncSession, inbox: InboxContext
    ) -> None:
        await store(session, inbox, mail())
        again = await store(session, inbox, mail(), mail())
        assert (again.stored, again.duplicates) == (0, 2)
        count = await session.scalar(
            select(func.count()).select_from(Message).where(Message.inbox_id == inbox.inbox_id)
        )
        assert count == 1

    async def test_mail_without_message_id_is_deduplicated_by_content(
        self, session: AsyncSession, inbox: InboxContext
    ) -> None:
        first = await store(session, inbox, mail(message_id=None))
        second = await store(session, inbox, mail(message_id=None))
        other = await store(session, inbox, mail(message_id=None, body="something else"))
        assert (first.stored, second.stored, other.stored) == (1, 0, 1)

    @pytest.mark.parametrize(
        ("headers", "expected"),
        [
            ({"in_reply_to": "<m1@customer.test>"}, "in_reply_to"),
            ({"references": "<zz@elsewhere.test> <m1@customer.test>"}, "references"),
            ({"subject": "Re: Order 1234 never arrived"}, "subject"),
            ({"subject": "AW: Order 1234 never arrived"}, "subject"),
            ({"subject": "SV: SV: Order 1234 never arrived"}, "subject"),
        ],
    )
    async def test_replies_land_in_the_conversation(
        self, session: AsyncSession, inbox: InboxContext, headers: dict[str, str], expected: str
    ) -> None:
        await store(session, inbox, mail())
        await store(session, inbox, mail(message_id="<m2@customer.test>", **headers))
        first = await message(session, inbox, "m1@customer.test")
        reply = await message(session, inbox, "m2@customer.test")
        assert reply.conversation_id == first.conversation_id
        assert reply.threaded_by == expected

    async def test_same_subject_from_another_contact_is_a_new_conversation(
        self, session: AsyncSession, inbox: InboxContext
    ) -> None:
        await store(session, inbox, mail())
        await store(
            session,
            inbox,
            mail(
                message_id="<b1@other.test>",
                sender="bob@other.test",
                subject="Re: Order 1234 never arrived",
            ),
        )
        first = await message(session, inbox, "m1@customer.test")
        other = await message(session, inbox, "b1@other.test")
        assert other.conversation_id != first.conversation_id
        assert other.threaded_by == "new"

    async def test_subject_without_reply_prefix_or_past_the_window_is_new(
        self, session: AsyncSession, inbox: InboxContext
    ) -> None:
        long_ago = NOW - timedelta(days=45)
        await store(session, inbox, mail(date=long_ago))
        # the same subject without Re: is a new topic; a reply 45 days on is past the window
        await store(session, inbox, mail(message_id="<m2@customer.test>", date=long_ago))
        await store(
            session,
            inbox,
            mail(message_id="<m3@customer.test>", subject="Re: Order 1234 never arrived"),
        )
        ids = {
            (await message(session, inbox, f"m{n}@customer.test")).conversation_id
            for n in (1, 2, 3)
        }
        assert len(ids) == 3

    async def test_reply_to_our_outbound_message_id_finds_its_token(
        self, session: AsyncSession, inbox: InboxContext
    ) -> None:
        await store(session, inbox, mail())
        first = await message(session, inbox, "m1@customer.test")
        conversation = await session.get_one(Conversation, first.conversation_id)
        ours = f"<01JABCDEFG.{conversation.thread_token}@example.com>"
        await store(
            session,
            inbox,
            mail(message_id="<m2@customer.test>", in_reply_to=ours, subject="Thanks"),
        )
        reply = await message(session, inbox, "m2@customer.test")
        assert (reply.conversation_id, reply.threaded_by) == (conversation.id, "token")

    async def test_a_reply_fetched_before_its_parent_is_joined_by_the_parent(
        self, session: AsyncSession, inbox: InboxContext
    ) -> None:
        await store(
            session, inbox, mail(message_id="<m2@customer.test>", in_reply_to="<m1@customer.test>")
        )
        await store(session, inbox, mail())
        child = await message(session, inbox, "m2@customer.test")
        parent = await message(session, inbox, "m1@customer.test")
        assert parent.conversation_id == child.conversation_id

    async def test_reference_cycles_terminate_in_one_conversation(
        self, session: AsyncSession, inbox: InboxContext
    ) -> None:
        await store(
            session,
            inbox,
            mail(message_id="<a@x.test>", references="<b@x.test>"),
            mail(message_id="<b@x.test>", references="<a@x.test>"),
        )
        a = await message(session, inbox, "a@x.test")
        b = await message(session, inbox, "b@x.test")
        assert a.conversation_id == b.conversation_id

    async def test_customer_reply_reopens_a_resolved_conversation(
        self, session: AsyncSession, inbox: InboxContext
    ) -> None:
        await store(session, inbox, mail())
        first = await message(session, inbox, "m1@customer.test")
        conversation = await session.get_one(Conversation, first.conversation_id)
        conversation.status = "resolved"
        conversation.waiting_since = None
        await session.flush()
        await store(
            session, inbox, mail(message_id="<m2@customer.test>", in_reply_to="<m1@customer.test>")
        )
        await session.refresh(conversation)
        assert conversation.status == "open"
        assert conversation.waiting_since is not None
        changed = await session.scalar(
            select(func.count())
            .select_from(Event)
            .where(
                Event.conversation_id == conversation.id,
                Event.type == "conversation.status_changed",
            )
        )
        assert changed == 1

    async def test_an_auto_reply_neither_reopens_nor_waits(
        self, session: AsyncSession, inbox: InboxContext
    ) -> None:
        await store(session, inbox, mail())
        first = await message(session, inbox, "m1@customer.test")
        conversation = await session.get_one(Conversation, first.conversation_id)
        conversation.status, conversation.waiting_since = "resolved", None
        await session.flush()
        await store(
            session,
            inbox,
            mail(
                message_id="<m2@customer.test>",
                in_reply_to="<m1@customer.test>",
                subject="Automatic reply: Order 1234",
                extra="Auto-Submitted: auto-replied",
            ),
        )
        await session.refresh(conversation)
        reply = await message(session, inbox, "m2@customer.test")
        assert reply.auto_kind == "auto_reply"
        assert (conversation.status, conversation.waiting_since) == ("resolved", None)

    async def test_mail_from_the_team_is_outbound_and_answers_the_customer(
        self, session: AsyncSession, inbox: InboxContext
    ) -> None:
        await store(session, inbox, mail())
        await store(
            session,
            inbox,
            mail(
                message_id="<r1@example.com>",
                sender="Agent <agent@example.com>",
                to="ana@customer.test",
                in_reply_to="<m1@customer.test>",
            ),
        )
        reply = await message(session, inbox, "r1@example.com")
        conversation = await session.get_one(Conversation, reply.conversation_id)
        assert reply.direction == "outbound"
        assert conversation.waiting_since is None

    async def test_unparseable_mail_without_sender_is_quarantined_raw(
        self, session: AsyncSession, inbox: InboxContext
    ) -> None:
        junk = b"\x00\xff\xfe garbage that is not mail \x00" * 10
        result = await store(session, inbox, junk)
        assert result.stored == 1
        row = await session.scalar(select(Message).where(Message.inbox_id == inbox.inbox_id))
        assert row is not None
        assert row.conversation_id is None
        raw = await session.get_one(MessageRaw, row.id)
        assert raw.raw == junk


class TestBounces:
    async def test_a_bounce_joins_the_conversation_of_the_mail_it_bounced(
        self, session: AsyncSession, inbox: InboxContext
    ) -> None:
        await store(
            session,
            inbox,
            mail(
                sender="Agent <agent@example.com>",
                to="gone@customer.test",
                message_id="<out1@example.com>",
            ),
        )
        dsn = (
            b"From: Mail Delivery System <MAILER-DAEMON@mx.example.net>\r\n"
            b"To: agent@example.com\r\nSubject: Undelivered Mail Returned to Sender\r\n"
            b"Message-ID: <dsn1@mx.example.net>\r\nAuto-Submitted: auto-replied\r\n"
            b"Date: Mon, 02 Mar 2026 11:00:00 +0000\r\nMIME-Version: 1.0\r\n"
            b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
            b"--b\r\nContent-Type: text/plain\r\n\r\nThe mail could not be delivered.\r\n"
            b"--b\r\nContent-Type: message/delivery-status\r\n\r\n"
            b"Reporting-MTA: dns; mx.example.net\r\n\r\n"
            b"Final-Recipient: rfc822; gone@customer.test\r\n"
            b"Action: failed\r\nStatus: 5.1.1\r\n\r\n"
            b"--b\r\nContent-Type: text/rfc822-headers\r\n\r\n"
            b"Message-ID: <out1@example.com>\r\nSubject: Order 1234 never arrived\r\n\r\n--b--\r\n"
        )
        await store(session, inbox, dsn)
        bounce = await message(session, inbox, "dsn1@mx.example.net")
        original = await message(session, inbox, "out1@example.com")
        assert bounce.auto_kind == "bounce"
        assert bounce.conversation_id == original.conversation_id
        conversation = await session.get_one(Conversation, original.conversation_id)
        assert conversation.waiting_since is None  # a bounce is not a customer waiting on us
