"""Merging two conversations into one, and splitting one in two.

Both keep every message, note and activity; moved messages say so in `threaded_by`
(`merged`, `split`). Later replies follow their messages: a reply to a moved message
lands where that message is now, and mail for a merged conversation's token goes to the
conversation it was merged into.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import and_, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from inbox_service.conversations import activity
from inbox_service.conversations.models import (
    Activity,
    Conversation,
    ConversationTag,
    Message,
    Note,
)
from inbox_service.core.errors import Invalid, NotFound
from inbox_service.core.events import EventType
from inbox_service.core.ids import new_id
from inbox_service.ingest.store import new_thread_token
from inbox_service.ingest.subjects import base_subject


async def refresh_aggregates(session: AsyncSession, conversation: Conversation) -> None:
    """Recount what a conversation shows from its messages (after messages moved)."""
    await session.flush()
    stats = (
        await session.execute(
            select(
                func.count(),
                func.max(Message.received_at),
                func.max(Message.received_at).filter(Message.direction == "outbound"),
            ).where(Message.conversation_id == conversation.id)
        )
    ).one()
    count, last_at, last_answer = stats
    conversation.message_count = int(count)
    if last_at is not None:
        conversation.last_message_at = last_at
    last = await session.scalar(
        select(Message.snippet)
        .where(Message.conversation_id == conversation.id)
        .order_by(Message.received_at.desc(), Message.id.desc())
        .limit(1)
    )
    conversation.snippet = last or ""
    waiting = select(func.min(Message.received_at)).where(
        Message.conversation_id == conversation.id,
        Message.direction == "inbound",
        Message.auto_kind.is_(None),
    )
    if last_answer is not None:
        waiting = waiting.where(Message.received_at > last_answer)
    conversation.waiting_since = await session.scalar(waiting)


async def merge(
    session: AsyncSession,
    target: Conversation,
    source: Conversation,
    *,
    actor_id: str | None,
    now: datetime,
) -> Conversation:
    """Move everything of `source` into `target`; `source` stays, pointing at `target`."""
    if source.id == target.id:
        raise Invalid("a conversation cannot be merged with itself", loc=["body", "source_id"])
    if source.inbox_id != target.inbox_id:
        raise Invalid(
            "only conversations of the same inbox can be merged", loc=["body", "source_id"]
        )
    if source.merged_into_id is not None:
        raise Invalid("that conversation was already merged", loc=["body", "source_id"])
    await session.execute(
        update(Message)
        .where(Message.conversation_id == source.id)
        .values(conversation_id=target.id, threaded_by="merged")
    )
    await session.execute(
        update(Note).where(Note.conversation_id == source.id).values(conversation_id=target.id)
    )
    await session.execute(
        update(Activity)
        .where(Activity.conversation_id == source.id)
        .values(conversation_id=target.id)
    )
    tag_ids = list(
        await session.scalars(
            select(ConversationTag.tag_id).where(ConversationTag.conversation_id == source.id)
        )
    )
    if tag_ids:
        await session.execute(
            insert(ConversationTag)
            .values(
                [{"conversation_id": target.id, "tag_id": t, "created_at": now} for t in tag_ids]
            )
            .on_conflict_do_nothing()
        )
    await session.execute(
        delete(ConversationTag).where(ConversationTag.conversation_id == source.id)
    )
    source.merged_into_id = target.id
    source.status = "resolved"
    source.message_count = 0
    source.waiting_since = None
    source.version += 1
    source.updated_at = now
    await refresh_aggregates(session, target)
    target.version += 1
    target.updated_at = now
    await activity.record(
        session,
        target,
        "merged",
        actor_id=actor_id,
        now=now,
        data={"source_id": source.id},
        event=EventType.CONVERSATION_MERGED,
    )
    return target


async def split(
    session: AsyncSession,
    conversation: Conversation,
    message_id: str,
    *,
    actor_id: str | None,
    now: datetime,
) -> Conversation:
    """Move the message and the later messages replying to it (directly or through each
    other) into a new conversation; the new conversation is returned."""
    messages = list(
        await session.scalars(
            select(Message)
            .where(Message.conversation_id == conversation.id)
            .order_by(Message.received_at, Message.id)
        )
    )
    first = next((m for m in messages if m.id == message_id), None)
    if first is None:
        raise NotFound(f"no message {message_id} in this conversation")
    moving = [first]
    chain = {first.message_id} if first.message_id else set()
    for message in messages:
        if message is first or (message.received_at, message.id) < (first.received_at, first.id):
            continue
        if chain & set(message.parent_ids or ()):
            moving.append(message)
            if message.message_id:
                chain.add(message.message_id)
    if len(moving) == len(messages):
        raise Invalid(
            "that would move every message: nothing would be left to split from",
            loc=["body", "message_id"],
        )
    new = Conversation(
        id=new_id("cnv"),
        inbox_id=conversation.inbox_id,
        contact_id=conversation.contact_id,
        subject=first.subject,
        base_subject=base_subject(first.subject),
        thread_token=new_thread_token(),
        status="open",
        priority=conversation.priority,
        priority_source=conversation.priority_source,
        message_count=0,
        snippet="",
        last_message_at=first.received_at,
        version=1,
        created_at=now,
        updated_at=now,
    )
    session.add(new)
    await session.flush()
    await session.execute(
        update(Message)
        .where(and_(Message.id.in_([m.id for m in moving])))
        .values(conversation_id=new.id, threaded_by="split")
    )
    await refresh_aggregates(session, new)
    await refresh_aggregates(session, conversation)
    conversation.version += 1
    conversation.updated_at = now
    data = {
        "from_conversation_id": conversation.id,
        "conversation_id": new.id,
        "message_ids": [m.id for m in moving],
    }
    await activity.record(
        session,
        conversation,
        "split",
        actor_id=actor_id,
        now=now,
        data=data,
        event=EventType.CONVERSATION_SPLIT,
    )
    await activity.record(
        session,
        new,
        "split",
        actor_id=actor_id,
        now=now,
        data=data,
        event=EventType.CONVERSATION_CREATED,
    )
    return new
