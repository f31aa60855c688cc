"""The outbox's write side, shared by the API, auto-acks and the sender: enqueue a reply
(its MIME built once, here) and record how its sending ended."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from inbox_service.contacts.models import Contact
from inbox_service.conversations.activity import conversation_summary
from inbox_service.conversations.models import Conversation, Message, MessageRaw
from inbox_service.core.errors import Conflict, Invalid
from inbox_service.core.events import EventType, emit
from inbox_service.core.ids import new_id
from inbox_service.inboxes.models import Inbox
from inbox_service.ingest.snippets import make_snippet
from inbox_service.replies import mime
from inbox_service.replies.mime import HeaderInjection, OutgoingMail, Recipient
from inbox_service.replies.models import Reply
from inbox_service.sla import hooks as sla_hooks

# Statuses in which a reply has not gone out and may still be cancelled.
CANCELLABLE = ("scheduled", "queued")
PENDING = ("scheduled", "queued", "sending", "unknown")


@dataclass(frozen=True)
class Draft:
    text: str
    html: str | None
    subject: str
    to: list[Recipient] | None  # None: the conversation's contact
    cc: list[Recipient]
    from_name: str | None
    send_at: datetime
    kind: str = "reply"
    author_id: str | None = None
    template_id: str | None = None


def _recipients(values: list[dict[str, Any]]) -> list[Recipient]:
    return [Recipient(v["address"], v.get("name")) for v in values]


def _as_json(recipients: list[Recipient]) -> list[dict[str, Any]]:
    return [{"address": r.address, "name": r.name} for r in recipients]


async def _parent(session: AsyncSession, conversation: Conversation) -> Message | None:
    """The message a reply answers: the latest one of the thread with a Message-ID."""
    found: Message | None = await session.scalar(
        select(Message)
        .where(Message.conversation_id == conversation.id, Message.message_id.is_not(None))
        .order_by(Message.received_at.desc(), Message.id.desc())
        .limit(1)
    )
    return found


def can_send(inbox: Inbox) -> bool:
    return bool(inbox.smtp_host)


async def enqueue(
    session: AsyncSession, conversation: Conversation, inbox: Inbox, draft: Draft, *, now: datetime
) -> Reply:
    """Add the outbox row, MIME built and Message-ID fixed now; the caller commits."""
    if not can_send(inbox):
        raise Conflict(f"inbox {inbox.id} has no SMTP settings, so it cannot send replies")
    to = draft.to
    if to is None:
        contact = (
            await session.get(Contact, conversation.contact_id) if conversation.contact_id else None
        )
        if contact is None:
            raise Invalid("the conversation has no contact: give `to`", loc=["body", "to"])
        to = [Recipient(contact.email, contact.name)]
    parent = await _parent(session, conversation)
    in_reply_to = parent.message_id if parent else None
    references: list[str] = []
    if parent is not None and parent.message_id:
        # RFC 5322 §3.6.4: the parent's References (or its In-Reply-To), then the parent
        references = [*(parent.references or parent.in_reply_to or []), parent.message_id]
    message_id = mime.new_message_id(conversation.thread_token, mime.domain_of(inbox.address))
    mail = OutgoingMail(
        message_id=message_id,
        from_address=inbox.address,
        from_name=draft.from_name,
        reply_to=inbox.address,
        to=to,
        cc=draft.cc,
        subject=draft.subject,
        date=draft.send_at,
        text=draft.text,
        html=draft.html,
        in_reply_to=in_reply_to,
        references=references,
        auto_submitted=draft.kind == "auto_ack",
    )
    try:
        raw = mime.build(mail)
    except HeaderInjection as exc:
        raise Invalid(str(exc), loc=["body", exc.what.split()[0]]) from None
    reply = Reply(
        id=new_id("rpl"),
        inbox_id=inbox.id,
        conversation_id=conversation.id,
        author_id=draft.author_id,
        kind=draft.kind,
        status="scheduled" if draft.send_at > now else "queued",
        message_row_id=new_id("msg"),
        message_id=message_id,
        in_reply_to=[in_reply_to] if in_reply_to else [],
        references=mime.trim_references(references),
        subject=draft.subject,
        from_name=draft.from_name,
        from_address=inbox.address.lower(),
        to=_as_json(to),
        cc=_as_json(draft.cc),
        text_body=draft.text,
        html_body=draft.html,
        template_id=draft.template_id,
        mime=raw,
        send_at=draft.send_at,
        next_attempt_at=draft.send_at,
        attempts=0,
        reconcile_attempts=0,
        sent_copy="none",
        created_at=now,
        updated_at=now,
    )
    session.add(reply)
    await session.flush()
    return reply


def reply_summary(reply: Reply) -> dict[str, Any]:
    """The reply as events carry it."""
    return {
        "id": reply.id,
        "kind": reply.kind,
        "delivery_status": reply.status,
        "author_id": reply.author_id,
        "message_id": reply.message_id,
        "timeline_message_id": reply.message_row_id,
        "subject": reply.subject,
        "to": reply.to,
        "cc": reply.cc,
        "attempts": reply.attempts,
        "last_error": reply.last_error,
        "sent_at": reply.sent_at.isoformat() if reply.sent_at else None,
    }


async def record_sent(
    session: AsyncSession, reply: Reply, *, at: datetime, response: str | None, copy: str
) -> None:
    """The reply went out: in this one transaction it becomes a message of its conversation,
    the conversation's counts move, `reply.sent` is emitted and the SLA clock is told."""
    reply.status = "sent"
    reply.sent_at = at
    reply.smtp_response = response
    reply.locked_by = None
    reply.locked_until = None
    reply.next_attempt_at = None
    reply.sent_copy = copy
    reply.updated_at = at
    conversation = await session.scalar(
        select(Conversation).where(Conversation.id == reply.conversation_id).with_for_update()
    )
    if conversation is None:  # deleted meanwhile (with its inbox): nothing to show it in
        await session.flush()
        return
    inserted = await session.scalar(
        insert(Message)
        .values(
            id=reply.message_row_id,
            inbox_id=reply.inbox_id,
            conversation_id=conversation.id,
            direction="outbound",
            dedupe_key=reply.message_id,
            message_id=reply.message_id,
            in_reply_to=reply.in_reply_to,
            references=reply.references,
            parent_ids=list(dict.fromkeys([*reply.in_reply_to, *reply.references])),
            subject=reply.subject,
            from_name=reply.from_name,
            from_address=reply.from_address,
            to=reply.to,
            cc=reply.cc,
            reply_to=[{"address": reply.from_address, "name": None}],
            sent_at=at,
            received_at=at,
            created_at=at,
            text_body=reply.text_body,
            html_body=reply.html_body,
            snippet=make_snippet(reply.text_body),
            threaded_by="reply",
            parse_status="ok",
            size=len(reply.mime),
            raw_sha256=hashlib.sha256(reply.mime).hexdigest(),
        )
        # the Sent copy may have been synced in first (a provider that files sent mail)
        .on_conflict_do_nothing()
        .returning(Message.id)
    )
    if inserted is not None:
        session.add(MessageRaw(message_id=inserted, raw=reply.mime))
        conversation.message_count += 1
        conversation.last_message_at = max(conversation.last_message_at, at)
        conversation.snippet = make_snippet(reply.text_body) or conversation.snippet
    if reply.kind == "reply":
        conversation.waiting_since = None  # we answered; an auto-ack is no answer
        conversation.reply_count += 1
        conversation.first_response_at = conversation.first_response_at or at
    conversation.version += 1
    conversation.updated_at = at
    await session.flush()
    await emit(
        session,
        EventType.REPLY_SENT,
        {"reply": reply_summary(reply), "conversation": conversation_summary(conversation)},
        now=at,
        inbox_id=reply.inbox_id,
        conversation_id=conversation.id,
    )
    if reply.kind == "reply":
        await sla_hooks.on_agent_reply(session, conversation, at=at, user_id=reply.author_id)


async def record_failed(session: AsyncSession, reply: Reply, *, at: datetime, error: str) -> None:
    """A permanent failure (or retries exhausted): `failed` with the reason, `reply.failed`."""
    reply.status = "failed"
    reply.last_error = error[:2000]
    reply.locked_by = None
    reply.locked_until = None
    reply.next_attempt_at = None
    reply.updated_at = at
    await session.flush()
    conversation = await session.get(Conversation, reply.conversation_id)
    await emit(
        session,
        EventType.REPLY_FAILED,
        {
            "reply": reply_summary(reply),
            "conversation": conversation_summary(conversation) if conversation else None,
            "error": reply.last_error,
        },
        now=at,
        inbox_id=reply.inbox_id,
        conversation_id=reply.conversation_id,
    )
