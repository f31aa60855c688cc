"""Presence heartbeats: who has a conversation open, and who is writing in it.

A PUT renews the caller's row for `TTL`; a row past its `expires_at` no longer counts,
whether or not the sweeper (`expire`) has deleted it yet, so reads never depend on the
worker. Every change of state (arrived, viewing <-> composing, left, expired) sends one
`presence.changed` on the live stream when its transaction commits; renewals send nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, delete, select, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from inbox_service.conversations.models import Conversation
from inbox_service.conversations.schemas import ConversationDetailOut, ConversationOut
from inbox_service.core.events import EventType
from inbox_service.events.ephemeral import publish_ephemeral
from inbox_service.presence.models import Presence
from inbox_service.presence.schemas import PresenceOut, PresenceState, PresentUser
from inbox_service.users.models import User

TTL = timedelta(seconds=30)
EXPIRE_BATCH = 500


async def _changed(
    session: AsyncSession,
    *,
    inbox_id: str,
    conversation_id: str,
    user_id: str,
    state: str | None,
    previous: str | None,
    now: datetime,
    reason: str | None = None,
) -> None:
    data: dict[str, Any] = {
        "conversation_id": conversation_id,
        "user_id": user_id,
        "state": state,
        "previous_state": previous,
    }
    if reason:
        data["reason"] = reason
    await publish_ephemeral(
        session,
        EventType.PRESENCE_CHANGED,
        data,
        inbox_id=inbox_id,
        conversation_id=conversation_id,
        now=now,
    )


async def heartbeat(
    session: AsyncSession,
    conversation: Conversation,
    *,
    user_id: str,
    state: PresenceState,
    now: datetime,
) -> None:
    """Set or renew the caller's presence for another `TTL`."""
    key = (Presence.conversation_id == conversation.id, Presence.user_id == user_id)
    # Locked so two heartbeats of the same person agree on what changed.
    old = (
        await session.execute(
            select(Presence.state, Presence.expires_at).where(*key).with_for_update()
        )
    ).first()
    previous = old.state if old is not None and old.expires_at > now else None
    stmt = insert(Presence).values(
        conversation_id=conversation.id,
        user_id=user_id,
        inbox_id=conversation.inbox_id,
        state=state,
        since=now,
        expires_at=now + TTL,
    )
    keep_since = and_(Presence.state == stmt.excluded.state, Presence.expires_at > now)
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[Presence.conversation_id, Presence.user_id],
            set_={
                "state": stmt.excluded.state,
                "expires_at": stmt.excluded.expires_at,
                "since": case((keep_since, Presence.since), else_=stmt.excluded.since),
            },
        )
    )
    if previous != state:
        await _changed(
            session,
            inbox_id=conversation.inbox_id,
            conversation_id=conversation.id,
            user_id=user_id,
            state=state,
            previous=previous,
            now=now,
        )


async def leave(
    session: AsyncSession, conversation: Conversation, *, user_id: str, now: datetime
) -> None:
    """The caller closed the conversation; nothing happens if they were not in it."""
    gone = (
        await session.execute(
            delete(Presence)
            .where(Presence.conversation_id == conversation.id, Presence.user_id == user_id)
            .returning(Presence.state)
        )
    ).first()
    if gone is not None:
        await _changed(
            session,
            inbox_id=conversation.inbox_id,
            conversation_id=conversation.id,
            user_id=user_id,
            state=None,
            previous=gone.state,
            now=now,
            reason="left",
        )


async def present(
    session: AsyncSession, conversation_id: str, *, now: datetime
) -> tuple[list[PresentUser], list[PresentUser]]:
    """(viewers, composers) of the conversation now, earliest first."""
    rows = await session.execute(
        select(Presence, User.name)
        .join(User, User.id == Presence.user_id)
        .where(
            Presence.conversation_id == conversation_id,
            Presence.expires_at > now,
            User.deleted_at.is_(None),
        )
        .order_by(Presence.since, Presence.user_id)
    )
    viewers: list[PresentUser] = []
    composers: list[PresentUser] = []
    for presence, name in rows:
        entry = PresentUser(
            user_id=presence.user_id,
            name=name,
            state="composing" if presence.state == "composing" else "viewing",
            since=presence.since,
            expires_at=presence.expires_at,
        )
        (composers if entry.state == "composing" else viewers).append(entry)
    return viewers, composers


async def presence_out(
    session: AsyncSession, conversation: Conversation, *, now: datetime
) -> PresenceOut:
    viewers, composers = await present(session, conversation.id, now=now)
    return PresenceOut(
        conversation_id=conversation.id,
        viewers=viewers,
        composers=composers,
        ttl_seconds=int(TTL.total_seconds()),
    )


async def with_presence(
    session: AsyncSession, out: ConversationOut, *, now: datetime
) -> ConversationDetailOut:
    """The conversation as its detail view shows it: with its viewers and composers."""
    viewers, composers = await present(session, out.id, now=now)
    return ConversationDetailOut(**dict(out), viewers=viewers, composers=composers)


async def expire(session: AsyncSession, *, now: datetime) -> int:
    """Delete lapsed heartbeats (a batch) and announce each; safe with several workers."""
    lapsed = (
        select(Presence.conversation_id, Presence.user_id)
        .where(Presence.expires_at <= now)
        .order_by(Presence.expires_at)
        .limit(EXPIRE_BATCH)
        .with_for_update(skip_locked=True)
    )
    rows: Sequence[Any] = (
        await session.execute(
            delete(Presence)
            .where(
                tuple_(Presence.conversation_id, Presence.user_id).in_(lapsed),
                Presence.expires_at <= now,
            )
            .returning(
                Presence.conversation_id, Presence.user_id, Presence.inbox_id, Presence.state
            )
        )
    ).all()
    for row in rows:
        await _changed(
            session,
            inbox_id=row.inbox_id,
            conversation_id=row.conversation_id,
            user_id=row.user_id,
            state=None,
            previous=row.state,
            now=now,
            reason="expired",
        )
    return len(rows)
