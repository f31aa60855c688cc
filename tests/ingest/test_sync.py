"""Folder sync against a real Dovecot: exactly once, whatever the server or the worker does."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from inbox_service.conversations.models import Conversation, Message, MessageLocation, MessageRaw
from inbox_service.core.clock import FixedClock
from inbox_service.core.db import SessionMaker, transaction
from inbox_service.ingest import store
from inbox_service.ingest.imap import ImapSession
from inbox_service.ingest.mime import parse_message
from inbox_service.ingest.models import FolderSyncState
from inbox_service.ingest.store import InboxContext
from inbox_service.ingest.sync import FolderResult, FolderSync
from tests.ingest.conftest import Mailbox
from tests.support.factories import make_inbox

DATE = "Mon, 02 Mar 2026 10:00:00 +0000"


def mail(n: int, *, reply_to: int | None = None, message_id: bool = True) -> bytes:
    lines = [
        "From: Ana <ana@customer.test>",
        "To: support@example.com",
        f"Subject: {'Re: ' if reply_to else ''}Parcel {reply_to or n} is late",
        f"Date: {DATE}",
    ]
    if message_id:
        lines.append(f"Message-ID: <m{n}@customer.test>")
    if reply_to:
        lines.append(f"In-Reply-To: <m{reply_to}@customer.test>")
    return ("\r\n".join(lines) + f"\r\n\r\nMessage number {n}.\r\n").encode()


@pytest.fixture
async def inbox(db: SessionMaker) -> InboxContext:
    async with transaction(db) as session:
        created = await make_inbox(session)
        return InboxContext(inbox_id=created.id, team_addresses=frozenset({created.address}))


async def sync(
    db: SessionMaker, inbox: InboxContext, mailbox: Mailbox, folder: str = "INBOX", **kw: int
) -> FolderResult:
    clock = FixedClock(datetime(2026, 3, 2, 12, tzinfo=UTC))
    async with await ImapSession.open(mailbox.settings) as imap:
        return await FolderSync(db, clock, inbox, **kw).run(imap, folder)  # type: ignore[arg-type]


async def count(session: AsyncSession, inbox: InboxContext) -> int:
    return int(
        await session.scalar(
            select(func.count()).select_from(Message).where(Message.inbox_id == inbox.inbox_id)
        )
        or 0
    )


async def folder_state(session: AsyncSession, inbox: InboxContext) -> FolderSyncState:
    return await session.get_one(FolderSyncState, (inbox.inbox_id, "INBOX"))


class TestFolderSync:
    async def test_new_mail_is_stored_threaded_and_left_unread(
        self, db: SessionMaker, inbox: InboxContext, mailbox: Mailbox
    ) -> None:
        for raw in (mail(1), mail(2, reply_to=1), mail(3)):
            mailbox.deliver(raw)
        result = await sync(db, inbox, mailbox)
        assert (result.stored, result.duplicates) == (3, 0)
        async with transaction(db) as session:
            conversations = await session.scalar(
                select(func.count(func.distinct(Message.conversation_id))).where(
                    Message.inbox_id == inbox.inbox_id
                )
            )
            assert conversations == 2
            state = await folder_state(session, inbox)
            assert state.last_uid == 3
            assert state.uidvalidity is not None
            assert state.last_success_at is not None
        assert all("\\Seen" not in flags for flags in mailbox.server.flags(mailbox.user).values())

    async def test_syncing_again_finds_nothing_new(
        self, db: SessionMaker, inbox: InboxContext, mailbox: Mailbox
    ) -> None:
        mailbox.deliver(mail(1))
        await sync(db, inbox, mailbox)
        for _ in range(3):  # UID FETCH n:* always answers the last UID (RFC 3501 6.4.8)
            again = await sync(db, inbox, mailbox)
            assert (again.stored, again.duplicates) == (0, 0)
        mailbox.deliver(mail(2))
        assert (await sync(db, inbox, mailbox)).stored == 1

    async def test_a_uidvalidity_change_rereads_without_duplicates(
        self, db: SessionMaker, inbox: InboxContext, mailbox: Mailbox
    ) -> None:
        for n in (1, 2, 3):
            mailbox.deliver(mail(n))
        mailbox.deliver(mail(4, message_id=False))  # known only by its content hash
        await sync(db, inbox, mailbox)
        mailbox.server.set_uidvalidity(mailbox.user, "INBOX", 42)
        result = await sync(db, inbox, mailbox)
        assert result.uidvalidity_changed
        assert result.stored == 0
        async with transaction(db) as session:
            assert await count(session, inbox) == 4
            state = await folder_state(session, inbox)
            assert (state.uidvalidity, state.uidvalidity_changes) == (42, 1)
            relocated = await session.scalar(
                select(func.count())
                .select_from(MessageLocation)
                .where(
                    MessageLocation.inbox_id == inbox.inbox_id, MessageLocation.uidvalidity == 42
                )
            )
            assert relocated == 4
        mailbox.deliver(mail(5))
        assert (await sync(db, inbox, mailbox)).stored == 1

    async def test_a_recreated_folder_reusing_uids_loses_nothing(
        self, db: SessionMaker, inbox: InboxContext, mailbox: Mailbox
    ) -> None:
        mailbox.server.create_folder(mailbox.user, "Support")
        mailbox.deliver(mail(1), folder="Support")
        await sync(db, inbox, mailbox, folder="Support")
        mailbox.server.delete_folder(mailbox.user, "Support")
        mailbox.server.create_folder(mailbox.user, "Support")
        mailbox.deliver(mail(1), folder="Support")  # the same mail again, UID 1 again
        mailbox.deliver(mail(2), folder="Support")  # new mail, UID 2
        result = await sync(db, inbox, mailbox, folder="Support")
        assert result.uidvalidity_changed
        assert result.stored == 1
        async with transaction(db) as session:
            assert await count(session, inbox) == 2

    async def test_a_poison_message_is_kept_and_does_not_stop_the_folder(
        self, db: SessionMaker, inbox: InboxContext, mailbox: Mailbox
    ) -> None:
        mailbox.deliver(mail(1))
        mailbox.deliver(b"Content-Type: text/plain; name*\r\nMessage-ID: <bad@x.test>\r\n\r\nx\r\n")
        mailbox.deliver(b"\x00\xff garbage \x00\r\n\r\n\x00")
        mailbox.deliver(mail(3))
        result = await sync(db, inbox, mailbox)
        assert result.stored == 4
        async with transaction(db) as session:
            assert (await folder_state(session, inbox)).last_uid == 4
            quarantined = await session.scalar(
                select(func.count())
                .select_from(Message)
                .where(Message.inbox_id == inbox.inbox_id, Message.conversation_id.is_(None))
            )
            assert quarantined == 1

    async def test_a_crash_mid_folder_resumes_exactly_once(
        self,
        db: SessionMaker,
        inbox: InboxContext,
        mailbox: Mailbox,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        for n in range(1, 8):
            mailbox.deliver(mail(n))
        real = store.store_batch
        calls = 0

        async def crash_on_third_batch(*args: object, **kwargs: object) -> object:
            nonlocal calls
            calls += 1
            if calls == 3:
                raise RuntimeError("the worker died here")
            return await real(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr("inbox_service.ingest.sync.store_batch", crash_on_third_batch)
        with pytest.raises(RuntimeError):
            await sync(db, inbox, mailbox, batch_size=2)
        async with transaction(db) as session:
            assert await count(session, inbox) == 4  # two batches committed, the third not
            assert (await folder_state(session, inbox)).last_uid == 4
        monkeypatch.setattr("inbox_service.ingest.sync.store_batch", real)
        result = await sync(db, inbox, mailbox, batch_size=2)
        assert (result.stored, result.duplicates) == (3, 0)
        async with transaction(db) as session:
            assert await count(session, inbox) == 7
            subjects = await session.scalars(
                select(Conversation.subject).where(Conversation.inbox_id == inbox.inbox_id)
            )
            assert len(set(subjects)) == 7


CORPORA = Path(__file__).resolve().parents[3] / "shared" / "corpora"
NASTY = [
    *sorted((CORPORA / "mikel-mail" / "error_emails").glob("*.eml")),
    *sorted((CORPORA / "nodemailer-mailparser").glob("*.eml")),
    *(
        CORPORA / "flanker" / name
        for name in (
            "missing-boundaries.eml",
            "missing-final-boundary.eml",
            "torture.eml",
            "enclosed-broken.eml",
            "enclosed-endless.eml",
            "mailformed-headers.eml",
            "long-header.eml",
            "false-multipart.eml",
            "no-ctype.eml",
        )
    ),
]


class TestNastyMail:
    async def test_a_corpus_of_broken_mail_is_stored_without_stopping_the_sync(
        self, db: SessionMaker, inbox: InboxContext, mailbox: Mailbox
    ) -> None:
        if not CORPORA.is_dir():  # as in test_mime: the corpora live beside the project
            pytest.skip("../shared/corpora not present")
        assert len(NASTY) >= 40
        # Binary junk (no NUL or bare CR: Dovecot rewrites those before we ever see them).
        junk = bytes(b for b in range(256) if b not in (0, 10, 13))
        binary_junk = b"\x01\x02\xff" * 500 + b"\r\n\r\n" + junk * 4
        raws = [path.read_bytes() for path in NASTY] + [binary_junk]
        for raw in raws:
            mailbox.deliver(raw)
        result = await sync(db, inbox, mailbox)
        # Copies of one message (same Message-ID) are one message; everything else is kept.
        distinct = {
            store.dedupe_key_of(store.Incoming(raw=r, parsed=parse_message(r))) for r in raws
        }
        assert result.stored == len(distinct)
        async with transaction(db) as session:
            assert (await folder_state(session, inbox)).last_uid == len(raws)
            assert await count(session, inbox) == len(distinct)
            rows = (
                await session.execute(
                    select(Message.parse_status, MessageRaw.raw)
                    .join(MessageRaw, MessageRaw.message_id == Message.id)
                    .where(Message.inbox_id == inbox.inbox_id)
                )
            ).all()

        # Each stored message is byte for byte one that was delivered (the server may only
        # turn bare LF into CRLF, as IMAP requires).
        def served(raw: bytes) -> bytes:
            return raw.replace(b"\r\n", b"\n")

        delivered = {served(r) for r in raws}
        assert all(served(bytes(raw)) in delivered for _, raw in rows)
        assert {status for status, _ in rows} <= {"ok", "degraded", "failed"}
