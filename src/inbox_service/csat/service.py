"""Recording a rating: the token is the credential, one rating per resolution cycle."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from inbox_service.conversations import activity
from inbox_service.conversations.models import Conversation
from inbox_service.core.auth import Caller
from inbox_service.core.errors import AppError, Conflict, NotFound
from inbox_service.core.events import EventType
from inbox_service.csat.models import CsatRating
from inbox_service.csat.schemas import CsatIn
from inbox_service.csat.tokens import BadToken, verify


class LinkExpired(AppError):
    status = 410
    slug = "csat-link-expired"
    title = "This rating link has expired"


INVALID_LINK = "this rating link is not valid"


async def record(
    session: AsyncSession, keys: list[bytes], token: str, body: CsatIn, *, now: datetime
) -> CsatRating:
    """Check the link, then store the score; a second rating of the same cycle is a 409."""
    if not keys:
        raise NotFound("ratings are not enabled on this service (no INBOX_SECRET_KEY)")
    try:
        claims = verify(keys, token)
    except BadToken:
        raise NotFound(INVALID_LINK) from None
    if claims.expires_at <= now:
        raise LinkExpired("ask the team for a new rating link")
    conversation = await session.scalar(
        select(Conversation).where(Conversation.id == claims.conversation_id).with_for_update()
    )
    if conversation is None:
        raise NotFound(INVALID_LINK)
    rating_id = await session.scalar(
        insert(CsatRating)
        .values(
            conversation_id=conversation.id,
            inbox_id=conversation.inbox_id,
            cycle=claims.cycle,
            score=body.score,
            comment=body.comment,
            created_at=now,
        )
        .on_conflict_do_nothing(index_elements=["conversation_id", "cycle"])
        .returning(CsatRating.id)
    )
    if rating_id is None:
        raise Conflict("this conversation was already rated; thank you")
    await activity.record(
        session,
        conversation,
        "csat_received",
        actor_id=None,
        now=now,
        data={"csat": {"score": body.score, "comment": body.comment, "cycle": claims.cycle}},
        event=EventType.CSAT_RECEIVED,
    )
    return await session.get_one(CsatRating, rating_id)


async def ratings_of(
    session: AsyncSession, caller: Caller, conversation_id: str
) -> list[CsatRating]:
    conversation = await session.scalar(
        select(Conversation.id).where(
            Conversation.id == conversation_id, caller.scope(Conversation.inbox_id)
        )
    )
    if conversation is None:
        raise NotFound(f"no conversation {conversation_id}")
    return list(
        await session.scalars(
            select(CsatRating)
            .where(CsatRating.conversation_id == conversation_id)
            .order_by(CsatRating.cycle)
        )
    )
