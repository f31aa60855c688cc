"""Tags (names unique whatever their case) and tagging conversations."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from inbox_service.conversations import activity
from inbox_service.conversations.models import Conversation, ConversationTag, Tag
from inbox_service.core.errors import Conflict, Invalid, NotFound
from inbox_service.core.events import EventType
from inbox_service.core.ids import new_id
from inbox_service.core.pagination import PageParams, keyset_page


async def list_tags(session: AsyncSession, params: PageParams) -> tuple[list[Tag], str | None]:
    return await keyset_page(
        session, select(Tag), keys=[Tag.id], params=params, key_of=lambda t: [t.id]
    )


async def by_name(session: AsyncSession, name: str) -> Tag | None:
    return await session.scalar(select(Tag).where(func.lower(Tag.name) == name.lower()))


async def create_tag(session: AsyncSession, name: str, *, now: datetime) -> Tag:
    if await by_name(session, name) is not None:
        raise Conflict(f"a tag named {name!r} exists")
    tag = Tag(id=new_id("tag"), name=name, created_at=now)
    session.add(tag)
    try:
        await session.flush()
    except IntegrityError as exc:  # created concurrently
        raise Conflict(f"a tag named {name!r} exists") from exc
    return tag


async def delete_tag(session: AsyncSession, tag_id: str) -> None:
    tag = await session.get(Tag, tag_id)
    if tag is None:
        raise NotFound(f"no tag {tag_id}")
    await session.delete(tag)
    await session.flush()


async def tag_conversation(
    session: AsyncSession,
    conversation: Conversation,
    name: str,
    *,
    actor_id: str | None,
    now: datetime,
) -> bool:
    """Add the tag (it must exist: 422 otherwise); False when it was already there."""
    tag = await by_name(session, name)
    if tag is None:
        raise Invalid(f"no tag named {name!r}; create it first", loc=["body", "name"])
    added = await session.scalar(
        insert(ConversationTag)
        .values(conversation_id=conversation.id, tag_id=tag.id, created_at=now)
        .on_conflict_do_nothing()
        .returning(ConversationTag.tag_id)
    )
    if added is None:
        return False
    conversation.version += 1
    conversation.updated_at = now
    await activity.record(
        session,
        conversation,
        "tagged",
        actor_id=actor_id,
        now=now,
        data={"tag": tag.name, "action": "added"},
        event=EventType.CONVERSATION_TAGGED,
    )
    return True


async def untag_conversation(
    session: AsyncSession,
    conversation: Conversation,
    name: str,
    *,
    actor_id: str | None,
    now: datetime,
) -> None:
    """Remove the tag; 404 when the conversation does not have it."""
    tag = await by_name(session, name)
    removed = None
    if tag is not None:
        removed = await session.scalar(
            delete(ConversationTag)
            .where(
                ConversationTag.conversation_id == conversation.id, ConversationTag.tag_id == tag.id
            )
            .returning(ConversationTag.tag_id)
        )
    if tag is None or removed is None:
        raise NotFound(f"the conversation has no tag {name!r}")
    conversation.version += 1
    conversation.updated_at = now
    await activity.record(
        session,
        conversation,
        "untagged",
        actor_id=actor_id,
        now=now,
        data={"tag": tag.name, "action": "removed"},
        event=EventType.CONVERSATION_TAGGED,
    )
