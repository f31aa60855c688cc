"""Replies as the API sees them: compose (templates, signature), the collision check,
enqueue, cancel (undo send), retry, read."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from inbox_service.conversations import service as conversations_service
from inbox_service.conversations.models import Conversation, Message
from inbox_service.core.auth import Caller
from inbox_service.core.errors import Conflict, Invalid, NotFound
from inbox_service.core.pagination import PageParams, keyset_page
from inbox_service.inboxes.models import Inbox
from inbox_service.ingest.htmlsafe import html_to_text
from inbox_service.replies import outbox
from inbox_service.replies.errors import ReplyCollision
from inbox_service.replies.mime import Recipient, reply_subject
from inbox_service.replies.models import Reply, Signature
from inbox_service.replies.schemas import RecipientOut, ReplyIn, ReplyOut
from inbox_service.templates import service as templates_service
from inbox_service.users.models import User


def reply_out(reply: Reply) -> ReplyOut:
    return ReplyOut(
        id=reply.id,
        conversation_id=reply.conversation_id,
        inbox_id=reply.inbox_id,
        author_id=reply.author_id,
        kind="auto_ack" if reply.kind == "auto_ack" else "reply",
        delivery_status=reply.status,
        timeline_message_id=reply.message_row_id,
        message_id=reply.message_id,
        subject=reply.subject,
        to=[RecipientOut(address=r["address"], name=r.get("name")) for r in reply.to],
        cc=[RecipientOut(address=r["address"], name=r.get("name")) for r in reply.cc],
        text=reply.text_body,
        html=reply.html_body,
        template_id=reply.template_id,
        send_at=reply.send_at,
        attempts=reply.attempts,
        next_attempt_at=reply.next_attempt_at,
        last_error=reply.last_error,
        smtp_response=reply.smtp_response,
        sent_copy=reply.sent_copy,
        created_at=reply.created_at,
        sent_at=reply.sent_at,
        cancelled_at=reply.cancelled_at,
    )


async def unseen_since(
    session: AsyncSession, conversation: Conversation, expected_id: str
) -> list[dict[str, Any]]:
    """What arrived after `expected_id`: newer messages (in the order we stored them), and
    other replies not sent yet. Runs under the conversation's row lock."""
    position: tuple[datetime, str] | None = None
    seen = await session.execute(
        select(Message.created_at, Message.id).where(
            Message.id == expected_id, Message.conversation_id == conversation.id
        )
    )
    row = seen.first()
    if row is not None:
        position = (row[0], row[1])
    else:
        pending = await session.execute(
            select(Reply.created_at, Reply.message_row_id).where(
                Reply.message_row_id == expected_id, Reply.conversation_id == conversation.id
            )
        )
        row = pending.first()
        if row is not None:
            position = (row[0], row[1])
    if position is None:
        raise Invalid(
            f"{expected_id} is not a message of this conversation",
            loc=["body", "expected_last_message_id"],
        )
    at, key = position
    newer = await session.scalars(
        select(Message)
        .where(
            Message.conversation_id == conversation.id,
            tuple_(Message.created_at, Message.id) > tuple_(at, key),
        )
        .order_by(Message.created_at, Message.id)
        .limit(50)
    )
    unseen: list[dict[str, Any]] = [
        {
            "id": m.id,
            "direction": m.direction,
            "from": {"name": m.from_name, "address": m.from_address} if m.from_address else None,
            "subject": m.subject,
            "snippet": m.snippet,
            "at": m.created_at.isoformat(),
            "pending": False,
        }
        for m in newer
    ]
    replies = await session.scalars(
        select(Reply)
        .where(
            Reply.conversation_id == conversation.id,
            Reply.status.in_(outbox.PENDING),
            Reply.message_row_id != key,
            or_(
                Reply.created_at > at,
                and_(Reply.created_at == at, Reply.message_row_id > key),
            ),
        )
        .order_by(Reply.created_at, Reply.id)
        .limit(50)
    )
    unseen += [
        {
            "id": r.message_row_id,
            "direction": "outbound",
            "from": {"name": r.from_name, "address": r.from_address},
            "subject": r.subject,
            "snippet": r.text_body[:200],
            "at": r.created_at.isoformat(),
            "pending": True,
        }
        for r in replies
    ]
    return unseen


async def signature_of(session: AsyncSession, user_id: str) -> str:
    found = await session.get(Signature, user_id)
    return found.text if found is not None else ""


async def create_reply(
    session: AsyncSession, caller: Caller, conversation_id: str, data: ReplyIn, *, now: datetime
) -> Reply:
    """Check, compose and enqueue a reply. The conversation row stays locked from the
    collision check to the insert, so of two replies made on the same view one wins."""
    conversation = await conversations_service.get_visible_conversation(
        session, caller, conversation_id, for_update=True
    )
    if conversation.merged_into_id is not None:
        raise Conflict(f"conversation was merged into {conversation.merged_into_id}: reply there")
    if data.expected_last_message_id is not None:
        unseen = await unseen_since(session, conversation, data.expected_last_message_id)
        if unseen:
            raise ReplyCollision(unseen)
    inbox = await session.get_one(Inbox, conversation.inbox_id)
    agent = await session.get(User, caller.user_id)
    text, html, subject = data.body_text, data.body_html, reply_subject(conversation.subject)
    if data.template_id is not None:
        template = await templates_service.get_visible(session, caller, data.template_id)
        if not templates_service.usable_in(template, inbox.id):
            raise NotFound(f"template {data.template_id} belongs to another inbox")
        rendered = await templates_service.render_for(
            session, template, conversation, agent=agent, variables=data.variables
        )
        text = rendered.body
        subject = rendered.subject or subject
    if text is None:
        text = html_to_text(html or "")
    if data.signature and (signature := await signature_of(session, caller.user_id)):
        text = f"{text.rstrip()}\n\n-- \n{signature}\n"
    send_at = data.send_at or now + timedelta(seconds=inbox.undo_send_seconds)
    draft = outbox.Draft(
        text=text,
        html=html,
        subject=subject,
        to=[Recipient(r.address, r.name) for r in data.to] if data.to else None,
        cc=[Recipient(r.address, r.name) for r in data.cc],
        from_name=f"{agent.name} via {inbox.name}" if agent else inbox.name,
        send_at=max(send_at, now),
        author_id=caller.user_id,
        template_id=data.template_id,
    )
    return await outbox.enqueue(session, conversation, inbox, draft, now=now)


async def get_visible(
    session: AsyncSession, caller: Caller, reply_id: str, *, for_update: bool = False
) -> Reply:
    stmt = select(Reply).where(Reply.id == reply_id, caller.scope(Reply.inbox_id))
    found = await session.scalar(stmt.with_for_update() if for_update else stmt)
    if found is None:
        raise NotFound(f"no reply {reply_id}")
    return found


async def cancel(session: AsyncSession, reply: Reply, *, now: datetime) -> Reply:
    """Undo send. The row lock makes this and the sender's claim exclusive: a reply is
    either cancelled (and never sent) or already on its way (409)."""
    if reply.status == "cancelled":
        return reply
    if reply.status not in outbox.CANCELLABLE:
        raise Conflict(f"reply is {reply.status}: too late to cancel")
    reply.status = "cancelled"
    reply.cancelled_at = now
    reply.next_attempt_at = None
    reply.updated_at = now
    await session.flush()
    return reply


async def retry(session: AsyncSession, reply: Reply, *, now: datetime) -> Reply:
    """An agent's decision to send again a reply that `failed` or whose outcome is
    `unknown` (same bytes, same Message-ID: receivers can drop a duplicate)."""
    if reply.status not in ("failed", "unknown"):
        raise Conflict(f"reply is {reply.status}: only failed or unknown replies are retried")
    reply.status = "queued"
    reply.next_attempt_at = now
    reply.data_started_at = None
    reply.locked_by = None
    reply.locked_until = None
    reply.updated_at = now
    await session.flush()
    return reply


async def list_for_conversation(
    session: AsyncSession, conversation: Conversation, params: PageParams
) -> tuple[list[Reply], str | None]:
    stmt = select(Reply).where(Reply.conversation_id == conversation.id)
    return await keyset_page(
        session,
        stmt,
        keys=[Reply.created_at, Reply.id],
        params=params,
        key_of=lambda r: [r.created_at, r.id],
    )


async def set_signature(
    session: AsyncSession, user_id: str, text: str, *, now: datetime
) -> Signature:
    found = await session.get(Signature, user_id)
    if found is None:
        found = Signature(user_id=user_id, text=text, updated_at=now)
        session.add(found)
    else:
        found.text = text
        found.updated_at = now
    await session.flush()
    return found
