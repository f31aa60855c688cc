"""Helpers for the assignment tests: mail in, agents, and who holds what."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from inbox_service.assignment.models import AssignmentRequest
from inbox_service.conversations.models import Conversation, Message
from inbox_service.core.db import SessionMaker, transaction
from inbox_service.inboxes import service as inboxes_service
from inbox_service.inboxes.models import Inbox
from inbox_service.ingest.mime import parse_message
from inbox_service.ingest.store import InboxContext, Incoming, store_batch
from inbox_service.users.models import User
from tests.support.factories import make_inbox, make_user


def mail(tag: str, *, in_reply_to: str | None = None) -> bytes:
    reply = f"In-Reply-To: <{in_reply_to}>\r\n" if in_reply_to else ""
    return (
        f"From: {tag}@customer.test\r\nTo: support@example.com\r\nSubject: About {tag}\r\n"
        f"Message-ID: <{tag}@customer.test>\r\n{reply}"
        f"Date: Mon, 02 Mar 2026 10:00:00 +0000\r\n\r\nHello\r\n"
    ).encode()


async def ingest(
    sm: SessionMaker, inbox_id: str, raws: Sequence[bytes], *, now: datetime
) -> list[str]:
    """Store the mails (one batch, as IMAP sync does); the ids of the conversations that
    batch created, oldest first."""
    async with transaction(sm) as session:
        items = [Incoming(raw=raw, parsed=parse_message(raw)) for raw in raws]
        context = InboxContext(inbox_id=inbox_id, team_addresses=frozenset())
        await store_batch(session, context, items, now=now)
        started = await session.scalars(
            select(Message.conversation_id)
            .where(
                Message.inbox_id == inbox_id,
                Message.message_id.in_([item.parsed.message_id for item in items]),
                Message.threaded_by == "new",
            )
            .order_by(Message.conversation_id)
        )
        return [cid for cid in started if cid is not None]


async def team_inbox(
    session: AsyncSession,
    *,
    policy: str,
    capacities: Iterable[int] = (20, 20, 20),
    away: int = 0,
) -> tuple[Inbox, list[User], list[User]]:
    """An inbox with `policy`, available agents with these capacities, and `away` agents."""
    available = [await make_user(session) for _ in capacities]
    for user, capacity in zip(available, capacities, strict=True):
        user.capacity = capacity
    gone = [await make_user(session) for _ in range(away)]
    for user in gone:
        user.availability = "away"
    inbox = await make_inbox(session, members=(*available, *gone))
    inbox.auto_assignment = policy
    await session.flush()
    return inbox, available, gone


async def add_agent(session: AsyncSession, inbox: Inbox, *, capacity: int = 20) -> User:
    user = await make_user(session)
    user.capacity = capacity
    await session.flush()
    await inboxes_service.add_member(session, inbox, user.id, now=user.created_at)
    return user


async def open_loads(sm: SessionMaker, user_ids: Iterable[str]) -> dict[str, int]:
    """Open conversations assigned to each user, in every inbox."""
    ids = list(user_ids)
    async with transaction(sm) as session:
        rows = await session.execute(
            select(Conversation.assignee_id, func.count())
            .where(Conversation.assignee_id.in_(ids), Conversation.status == "open")
            .group_by(Conversation.assignee_id)
        )
        counts = Counter({user_id: int(n) for user_id, n in rows})
    return {user_id: counts[user_id] for user_id in ids}


async def assignees(sm: SessionMaker, conversation_ids: Iterable[str]) -> list[str | None]:
    ids = list(conversation_ids)
    async with transaction(sm) as session:
        rows = dict(
            (
                await session.execute(
                    select(Conversation.id, Conversation.assignee_id).where(
                        Conversation.id.in_(ids)
                    )
                )
            ).all()
        )
    return [rows[cid] for cid in ids]


async def waiting(sm: SessionMaker) -> int:
    async with transaction(sm) as session:
        return int(await session.scalar(select(func.count()).select_from(AssignmentRequest)) or 0)


async def set_user(sm: SessionMaker, user_id: str, **values: object) -> None:
    async with transaction(sm) as session:
        await session.execute(update(User).where(User.id == user_id).values(**values))
