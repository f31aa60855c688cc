"""Internal notes on a conversation (never sent), with @mentions of users."""

from __future__ import annotations

import re
from datetime import datetime

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from inbox_service.conversations.models import Conversation, Note
from inbox_service.core.events import EventType, emit
from inbox_service.core.ids import new_id
from inbox_service.presence import collision
from inbox_service.users.models import User

# `@usr_…` (a user id) or `@someone@example.com` (a user's address).
MENTION = re.compile(r"(?<![\w.])@(usr_[0-9A-Z]{26}|[\w.+-]+@[\w-]+(?:\.[\w-]+)+)")


async def mentioned_user_ids(session: AsyncSession, body: str) -> list[str]:
    """The live users the body mentions, in order of first mention; unknown ones ignored."""
    found = list(dict.fromkeys(match.group(1) for match in MENTION.finditer(body)))
    if not found:
        return []
    users = await session.execute(
        select(User.id, func.lower(User.email)).where(
            User.deleted_at.is_(None),
            or_(User.id.in_(found), func.lower(User.email).in_([f.lower() for f in found])),
        )
    )
    by_key: dict[str, str] = {}
    for user_id, email in users:
        by_key[user_id] = by_key[email] = user_id
    keys = [f if f.startswith("usr_") else f.lower() for f in found]
    return list(dict.fromkeys(by_key[key] for key in keys if key in by_key))


async def add_note(
    session: AsyncSession,
    conversation: Conversation,
    body: str,
    *,
    author_id: str,
    now: datetime,
    expected_last_message_id: str | None = None,
) -> Note:
    """Add a note; with `expected_last_message_id`, only if no message arrived since (409)."""
    await collision.require_seen(session, conversation, expected_last_message_id)
    note = Note(
        id=new_id("note"),
        conversation_id=conversation.id,
        inbox_id=conversation.inbox_id,
        author_id=author_id,
        body=body,
        mentions=await mentioned_user_ids(session, body),
        created_at=now,
    )
    session.add(note)
    await session.flush()
    await emit(
        session,
        EventType.NOTE_CREATED,
        {
            "note": {
                "id": note.id,
                "conversation_id": conversation.id,
                "body": body,
                "author_id": author_id,
                "mentions": note.mentions,
            },
            "actor": {"id": author_id},
        },
        now=now,
        inbox_id=conversation.inbox_id,
        conversation_id=conversation.id,
    )
    return note
