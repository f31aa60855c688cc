"""Factories for the objects most tests need. Keyword-only, typed, return ORM objects."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from inbox_service.core.auth import Caller
from inbox_service.inboxes import service as inboxes_service
from inbox_service.inboxes.models import Inbox
from inbox_service.inboxes.schemas import InboxIn
from inbox_service.users import service as users_service
from inbox_service.users.models import User
from inbox_service.users.schemas import ApiKeyIn, UserIn

_seq = itertools.count(1)
NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


async def make_user(
    session: AsyncSession,
    *,
    role: str = "agent",
    email: str | None = None,
    name: str | None = None,
    now: datetime = NOW,
) -> User:
    n = next(_seq)
    data = UserIn(
        email=email or f"user{n}@example.com",
        name=name or f"User {n}",
        role="admin" if role == "admin" else "agent",
    )
    return await users_service.create_user(session, data, now=now)


async def make_key(session: AsyncSession, user: User, *, now: datetime = NOW) -> str:
    """A fresh API key (the token) for `user`."""
    caller = Caller(user_id=user.id, role="admin", inbox_ids=None)
    _, token = await users_service.create_api_key(session, caller, ApiKeyIn(), now=now)
    return token


async def make_inbox(
    session: AsyncSession,
    *,
    members: tuple[User, ...] = (),
    name: str | None = None,
    now: datetime = NOW,
) -> Inbox:
    n = next(_seq)
    inbox = await inboxes_service.create_inbox(
        session, InboxIn(name=name or f"Inbox {n}", address=f"support{n}@example.com"), now=now
    )
    for user in members:
        await inboxes_service.add_member(session, inbox, user.id, now=now)
    return inbox


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
