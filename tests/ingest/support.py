"""Helpers shared by the ingest tests: an inbox wired to a test IMAP server."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from inbox_service.conversations.models import Message
from inbox_service.core.crypto import CredentialCipher
from inbox_service.core.db import SessionMaker, transaction
from inbox_service.inboxes.mail_settings import ImapSettingsIn, apply_imap_settings
from inbox_service.inboxes.models import Inbox
from tests.ingest.conftest import Mailbox
from tests.support.factories import make_inbox


async def imap_inbox(
    sessionmaker: SessionMaker,
    mailbox: Mailbox,
    cipher: CredentialCipher,
    *,
    port: int | None = None,
    poll_seconds: int = 10,
) -> str:
    """An inbox syncing `mailbox` (through `port` when a proxy sits in between)."""
    async with transaction(sessionmaker) as session:
        inbox = await make_inbox(session)
        settings = ImapSettingsIn(
            host=mailbox.server.host,
            port=port or mailbox.server.port,
            security="none",
            username=mailbox.user,
            secret=mailbox.password,  # type: ignore[arg-type]
            poll_interval_seconds=poll_seconds,
        )
        apply_imap_settings(inbox, settings, cipher)
        await session.flush()
        return inbox.id


async def message_count(sessionmaker: SessionMaker, inbox_id: str) -> int:
    async with transaction(sessionmaker) as session:
        return await _count(session, inbox_id)


async def _count(session: AsyncSession, inbox_id: str) -> int:
    total = await session.scalar(
        select(func.count()).select_from(Message).where(Message.inbox_id == inbox_id)
    )
    return int(total or 0)


async def distinct_keys(sessionmaker: SessionMaker, inbox_id: str) -> int:
    async with transaction(sessionmaker) as session:
        total = await session.scalar(
            select(func.count(func.distinct(Message.dedupe_key))).where(
                Message.inbox_id == inbox_id
            )
        )
        return int(total or 0)


__all__ = ["Inbox", "imap_inbox", "message_count"]
