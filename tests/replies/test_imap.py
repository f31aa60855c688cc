"""Replies and the IMAP side (real Dovecot): a customer's answer threads back, the Sent copy,
and reconciling a send of unknown outcome by looking for it in the Sent folder."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
from sqlalchemy import select

from inbox_service.conversations.models import Message
from inbox_service.core.clock import FixedClock
from inbox_service.core.crypto import CredentialCipher, generate_key
from inbox_service.core.db import SessionMaker, transaction
from inbox_service.inboxes.mail_settings import (
    ImapSettingsIn,
    apply_imap_settings,
    apply_smtp_settings,
)
from inbox_service.inboxes.models import Inbox
from inbox_service.ingest.imap import ImapSession
from inbox_service.ingest.store import InboxContext
from inbox_service.ingest.sync import FolderSync
from inbox_service.replies.models import Reply
from inbox_service.replies.sender import ReplySender, SenderConfig
from tests.conftest import Team
from tests.ingest.conftest import Mailbox
from tests.replies.conftest import Thread, smtp_settings
from tests.replies.smtp_sink import SmtpSink
from tests.replies.test_send import post_reply, reply_row


async def wire_imap(
    db: SessionMaker,
    thread: Thread,
    mailbox: Mailbox,
    sink: SmtpSink,
    cipher: CredentialCipher,
    *,
    provider_files_sent: bool,
) -> None:
    mailbox.server.create_folder(mailbox.user, "Sent")
    async with transaction(db) as session:
        inbox = await session.get_one(Inbox, thread.inbox_id)
        apply_imap_settings(
            inbox,
            ImapSettingsIn(
                host=mailbox.server.host,
                port=mailbox.server.port,
                security="none",
                username=mailbox.user,
                secret=mailbox.password,  # type: ignore[arg-type]
            ),
            cipher,
        )
        apply_smtp_settings(
            inbox,
            smtp_settings(sink, sent_folder="Sent", provider_files_sent=provider_files_sent),
            cipher,
        )


def sender_for(db: SessionMaker, clock: FixedClock, cipher: CredentialCipher) -> ReplySender:
    return ReplySender(
        db, clock, cipher, worker_id="t", config=SenderConfig(smtp_timeout=3, imap_timeout=10)
    )


async def test_a_customer_reply_to_our_mail_threads_back_into_the_conversation(
    client: httpx.AsyncClient,
    team: Team,
    thread: Thread,
    sink: SmtpSink,
    sender: ReplySender,
    db: SessionMaker,
    mailbox: Mailbox,
) -> None:
    created = await post_reply(client, team, thread)
    await sender.run_once()
    ours = sink.received[0].message
    # the customer's client answers with only In-Reply-To (and a new subject)
    mailbox.deliver(
        (
            "From: Ana Silva <ana@customer.test>\r\n"
            f"To: {thread.inbox_address}\r\n"
            "Subject: thanks!\r\n"
            "Date: Mon, 05 Jan 2026 10:00:00 +0000\r\n"
            "Message-ID: <c9@customer.test>\r\n"
            f"In-Reply-To: {ours['Message-ID']}\r\n\r\nGot it, thanks.\r\n"
        ).encode()
    )
    # and another one whose client dropped the reply headers but kept our id in References
    # of a forwarded chain from elsewhere: the token in our Message-ID still finds it
    mangled = ours["Message-ID"].replace("<", "<x").replace(">", ">")
    mailbox.deliver(
        (
            "From: Ana Silva <ana@customer.test>\r\n"
            f"To: {thread.inbox_address}\r\n"
            "Subject: one more thing\r\n"
            "Date: Mon, 05 Jan 2026 10:05:00 +0000\r\n"
            "Message-ID: <c10@customer.test>\r\n"
            f"References: {mangled}\r\n\r\nAlso...\r\n"
        ).encode()
    )
    context = InboxContext(
        inbox_id=thread.inbox_id, team_addresses=frozenset({thread.inbox_address})
    )
    clock = FixedClock(datetime(2026, 1, 5, 10, 10, tzinfo=UTC))
    async with await ImapSession.open(mailbox.settings) as imap:
        await FolderSync(db, clock, context).run(imap, "INBOX")
    async with transaction(db) as session:
        rows = {
            m.message_id: (m.conversation_id, m.threaded_by)
            for m in await session.scalars(
                select(Message).where(Message.inbox_id == thread.inbox_id)
            )
        }
    assert rows["c9@customer.test"] == (thread.conversation_id, "in_reply_to")
    assert rows["c10@customer.test"] == (thread.conversation_id, "token")
    assert rows[created["message_id"]] == (thread.conversation_id, "reply")


async def test_sent_copy_is_appended_seen_once(
    client: httpx.AsyncClient,
    team: Team,
    thread: Thread,
    sink: SmtpSink,
    db: SessionMaker,
    clock: FixedClock,
    mailbox: Mailbox,
) -> None:
    cipher = CredentialCipher(generate_key())
    await wire_imap(db, thread, mailbox, sink, cipher, provider_files_sent=False)
    created = await post_reply(client, team, thread)
    sender = sender_for(db, clock, cipher)
    await sender.run_once()
    row = await reply_row(db, created["id"])
    assert (row.status, row.sent_copy) == ("sent", "appended")
    flags = mailbox.server.flags(mailbox.user, "Sent")
    assert list(flags.values()) == [("\\Seen",)]
    # a second pass (say, after a crash before recording) finds the copy and adds none
    async with transaction(db) as session:
        (await session.get_one(Reply, created["id"])).sent_copy = "pending"
    await sender.run_once()
    assert len(mailbox.server.flags(mailbox.user, "Sent")) == 1


async def test_failed_append_leaves_the_reply_sent(
    client: httpx.AsyncClient,
    team: Team,
    thread: Thread,
    sink: SmtpSink,
    db: SessionMaker,
    clock: FixedClock,
    mailbox: Mailbox,
) -> None:
    cipher = CredentialCipher(generate_key())
    await wire_imap(db, thread, mailbox, sink, cipher, provider_files_sent=False)
    mailbox.server.delete_folder(mailbox.user, "Sent")
    created = await post_reply(client, team, thread)
    await sender_for(db, clock, cipher).run_once()
    row = await reply_row(db, created["id"])
    assert (row.status, row.sent_copy) == ("sent", "failed")
    assert sink.count(created["message_id"]) == 1


async def test_unknown_outcome_is_reconciled_by_the_copy_the_provider_filed(
    client: httpx.AsyncClient,
    team: Team,
    thread: Thread,
    sink: SmtpSink,
    db: SessionMaker,
    clock: FixedClock,
    mailbox: Mailbox,
) -> None:
    cipher = CredentialCipher(generate_key())
    await wire_imap(db, thread, mailbox, sink, cipher, provider_files_sent=True)
    # like Gmail: whatever the server accepts lands in Sent, even if its 250 is lost
    sink.state.on_message = lambda raw: mailbox.deliver(raw, "Sent") and None
    sink.state.drop_after_data = 1
    created = await post_reply(client, team, thread)
    sender = sender_for(db, clock, cipher)
    await sender.run_once()  # sends (outcome lost), then reconciles in the same pass
    row = await reply_row(db, created["id"])
    assert row.status == "sent"
    assert row.smtp_response == "found in the Sent folder"
    assert row.sent_copy == "skipped"  # the provider filed it; no APPEND
    assert sink.count(created["message_id"]) == 1
    assert len(mailbox.server.flags(mailbox.user, "Sent")) == 1
