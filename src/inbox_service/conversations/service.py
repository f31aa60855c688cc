"""Conversations and their messages, as the API reads them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from pydantic_core import to_json
from sqlalchemy import DateTime, String, bindparam, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from inbox_service.contacts.models import Contact
from inbox_service.conversations import activity, queries
from inbox_service.conversations.models import Attachment, Conversation, Message, MessageRaw
from inbox_service.conversations.schemas import (
    AddressOut,
    AttachmentOut,
    ContactRef,
    ConversationOut,
    ConversationPatch,
    MessageOut,
    MessageSummaryOut,
    TimelineEntry,
)
from inbox_service.core.auth import Caller
from inbox_service.core.errors import Invalid, NotFound
from inbox_service.core.events import EventType
from inbox_service.core.pagination import PageParams, decode_cursor, encode_cursor, keyset_page
from inbox_service.ingest.mime import sanitize_html
from inbox_service.sla import hooks as sla_hooks
from inbox_service.sla import service as sla_service


async def get_visible_message(session: AsyncSession, caller: Caller, message_id: str) -> Message:
    """The message, if its inbox is one the caller may see; 404 otherwise."""
    message = await session.scalar(
        select(Message).where(Message.id == message_id, caller.scope(Message.inbox_id))
    )
    if message is None:
        raise NotFound(f"no message {message_id}")
    return message


async def message_detail(session: AsyncSession, message: Message) -> MessageOut:
    attachments = list(
        await session.scalars(
            select(Attachment).where(Attachment.message_id == message.id).order_by(Attachment.id)
        )
    )
    urls = {a.content_id: f"/v1/attachments/{a.id}" for a in attachments if a.content_id}
    return MessageOut(
        id=message.id,
        inbox_id=message.inbox_id,
        conversation_id=message.conversation_id,
        direction="outbound" if message.direction == "outbound" else "inbound",
        message_id=message.message_id,
        in_reply_to=message.in_reply_to,
        references=message.references,
        subject=message.subject,
        from_=AddressOut(name=message.from_name, address=message.from_address)
        if message.from_address
        else None,
        to=[AddressOut(**a) for a in message.to],
        cc=[AddressOut(**a) for a in message.cc],
        reply_to=[AddressOut(**a) for a in message.reply_to],
        sent_at=message.sent_at,
        received_at=message.received_at,
        text=message.text_body,
        html=sanitize_html(message.html_body, cid_urls=urls) if message.html_body else None,
        snippet=message.snippet,
        threaded_by=message.threaded_by,
        auto_kind=message.auto_kind,
        parse_status=message.parse_status,
        parse_error=message.parse_error,
        size=message.size,
        attachments=[
            AttachmentOut(
                id=a.id,
                filename=a.filename,
                content_type=a.content_type,
                size=a.size,
                inline=a.inline,
                content_id=a.content_id,
                url=f"/v1/attachments/{a.id}",
            )
            for a in attachments
        ],
    )


async def raw_bytes(session: AsyncSession, message: Message) -> bytes:
    raw = await session.get(MessageRaw, message.id)
    return raw.raw if raw is not None else b""


async def get_visible_attachment(
    session: AsyncSession, caller: Caller, attachment_id: str
) -> Attachment:
    """The attachment, checked through its message's inbox; 404 otherwise."""
    attachment = await session.scalar(
        select(Attachment)
        .join(Message, Message.id == Attachment.message_id)
        .where(Attachment.id == attachment_id, caller.scope(Message.inbox_id))
    )
    if attachment is None:
        raise NotFound(f"no attachment {attachment_id}")
    return attachment


async def get_visible_conversation(
    session: AsyncSession, caller: Caller, conversation_id: str, *, for_update: bool = False
) -> Conversation:
    """The conversation, if its inbox is one the caller may see; 404 otherwise."""
    stmt = select(Conversation).where(
        Conversation.id == conversation_id, caller.scope(Conversation.inbox_id)
    )
    conversation = await session.scalar(stmt.with_for_update() if for_update else stmt)
    if conversation is None:
        raise NotFound(f"no conversation {conversation_id}")
    return conversation


async def conversations_out(
    session: AsyncSession,
    rows: Sequence[tuple[Conversation, Contact | None]],
    *,
    now: datetime,
) -> list[ConversationOut]:
    """`now` (the request's clock) is what SLA status and time left are computed at."""
    tags = await queries.tags_of(session, [c.id for c, _ in rows])
    slas = await sla_service.views(session, [c.id for c, _ in rows], now=now)
    return [
        ConversationOut(
            id=c.id,
            inbox_id=c.inbox_id,
            subject=c.subject,
            status=c.status,
            priority=c.priority,
            priority_source=c.priority_source,
            assignee_id=c.assignee_id,
            contact=ContactRef(id=ct.id, email=ct.email, name=ct.name) if ct else None,
            snippet=c.snippet,
            message_count=c.message_count,
            tags=tags.get(c.id, []),
            last_message_at=c.last_message_at,
            waiting_since=c.waiting_since,
            snoozed_until=c.snoozed_until,
            merged_into_id=c.merged_into_id,
            created_at=c.created_at,
            updated_at=c.updated_at,
            version=c.version,
            sla=slas.get(c.id),
        )
        for c, ct in rows
    ]


async def conversation_page_json(
    session: AsyncSession,
    rows: Sequence[queries.ListRow],
    next_cursor: str | None,
    *,
    now: datetime,
) -> bytes:
    """A `ConversationPage` as JSON, built from `queries.list_conversations` rows.

    The same bytes as the page model would serialize to (its fields, in its order; pydantic
    writes the datetimes), without building and validating 50 models per request: the
    values come from typed columns. Tests compare each item with `conversation_out`.
    """
    # Clocks only where a policy applies: a page without any needs no second query.
    slas = await sla_service.views(
        session, [row.id for row in rows if row.sla_policy_id is not None], now=now
    )
    items = []
    # Unpacked in the order list_conversations gives: reading a Row's fields by name costs
    # more than building the whole page.
    for (
        id_,
        inbox_id,
        subject,
        status,
        priority,
        priority_source,
        assignee_id,
        contact_id,
        contact_email,
        contact_name,
        snippet,
        message_count,
        last_message_at,
        waiting_since,
        snoozed_until,
        merged_into_id,
        created_at,
        updated_at,
        version,
        _priority_rank,
        _sla_due_at,
        _sla_policy_id,
        tags,
    ) in rows:
        contact = None
        if contact_id is not None:
            contact = {"id": contact_id, "email": contact_email, "name": contact_name}
        items.append(
            {
                "id": id_,
                "inbox_id": inbox_id,
                "subject": subject,
                "status": status,
                "priority": priority,
                "priority_source": priority_source,
                "assignee_id": assignee_id,
                "contact": contact,
                "snippet": snippet,
                "message_count": message_count,
                "tags": tags,
                "last_message_at": last_message_at,
                "waiting_since": waiting_since,
                "snoozed_until": snoozed_until,
                "merged_into_id": merged_into_id,
                "created_at": created_at,
                "updated_at": updated_at,
                "version": version,
                "sla": slas.get(id_),
            }
        )
    return to_json({"items": items, "next_cursor": next_cursor})


async def conversation_out(
    session: AsyncSession, conversation: Conversation, *, now: datetime
) -> ConversationOut:
    contact = (
        await session.get(Contact, conversation.contact_id) if conversation.contact_id else None
    )
    return (await conversations_out(session, [(conversation, contact)], now=now))[0]


async def update_conversation(
    session: AsyncSession,
    conversation: Conversation,
    patch: ConversationPatch,
    *,
    actor_id: str | None,
    now: datetime,
) -> Conversation:
    """Status, priority and snooze; each change writes its activity and event."""
    changes = patch.model_fields_set
    if "status" in changes and patch.status is None:
        raise Invalid("status cannot be null", loc=["body", "status"])
    if "priority" in changes and patch.priority is None:
        raise Invalid("priority cannot be null", loc=["body", "priority"])
    status = patch.status
    if status is None and patch.snoozed_until is not None:
        status = "snoozed"
    if status == "snoozed":
        if patch.snoozed_until is None:
            raise Invalid("snoozing needs snoozed_until", loc=["body", "snoozed_until"])
        if patch.snoozed_until.tzinfo is None:
            raise Invalid("snoozed_until needs a time zone", loc=["body", "snoozed_until"])
        if patch.snoozed_until <= now:
            raise Invalid("snoozed_until must be in the future", loc=["body", "snoozed_until"])
    elif patch.snoozed_until is not None:
        raise Invalid("snoozed_until only goes with status snoozed", loc=["body", "snoozed_until"])
    changed = False
    if status is not None and (
        status != conversation.status
        or (status == "snoozed" and patch.snoozed_until != conversation.snoozed_until)
    ):
        previous = conversation.status
        conversation.status = status
        conversation.snoozed_until = patch.snoozed_until if status == "snoozed" else None
        _bump(conversation, now)
        await activity.record(
            session,
            conversation,
            "status_changed",
            actor_id=actor_id,
            now=now,
            data={"previous_status": previous, "status": status},
            event=EventType.CONVERSATION_STATUS_CHANGED,
        )
        await sla_hooks.on_status_changed(
            session, conversation, previous, now=now, actor_id=actor_id
        )
        changed = True
    if patch.priority is not None and patch.priority != conversation.priority:
        # A person's choice: rules never change it afterwards (rules/engine.py).
        conversation.priority_source = {
            "type": "user",
            "rule_id": None,
            "keyword": None,
            "user_id": actor_id,
        }
        if not changed:
            _bump(conversation, now)
        await change_priority(session, conversation, patch.priority, actor_id=actor_id, now=now)
    await session.flush()
    await session.refresh(conversation, ["priority_rank"])
    return conversation


async def change_priority(
    session: AsyncSession,
    conversation: Conversation,
    priority: str,
    *,
    actor_id: str | None,
    now: datetime,
) -> None:
    """Set `priority` (the caller has set `priority_source` and the version) with its
    timeline entry and event; running SLA cycles take the new priority's targets."""
    previous = conversation.priority
    conversation.priority = priority
    await activity.record(
        session,
        conversation,
        "priority_changed",
        actor_id=actor_id,
        now=now,
        data={
            "previous_priority": previous,
            "priority": priority,
            "priority_source": conversation.priority_source,
        },
        event=EventType.CONVERSATION_PRIORITY_CHANGED,
    )
    await sla_hooks.on_priority_changed(session, conversation)


def _bump(conversation: Conversation, now: datetime) -> None:
    conversation.version += 1
    conversation.updated_at = now


async def list_messages(
    session: AsyncSession, conversation: Conversation, params: PageParams
) -> tuple[list[Message], str | None]:
    stmt = select(Message).where(Message.conversation_id == conversation.id)
    return await keyset_page(
        session,
        stmt,
        keys=[Message.received_at, Message.id],
        params=params,
        key_of=lambda m: [m.received_at, m.id],
    )


def message_summary_out(message: Message) -> MessageSummaryOut:
    return MessageSummaryOut(
        id=message.id,
        direction="outbound" if message.direction == "outbound" else "inbound",
        from_=AddressOut(name=message.from_name, address=message.from_address)
        if message.from_address
        else None,
        subject=message.subject,
        snippet=message.snippet,
        received_at=message.received_at,
        threaded_by=message.threaded_by,
        auto_kind=message.auto_kind,
        parse_status=message.parse_status,
    )


# The timeline: messages, notes and activities of one conversation in one ordered stream,
# keyset-paged on (at, type, id) so entries with the same time keep a stable order.
_TIMELINE = text(
    """
    SELECT * FROM (
        SELECT received_at AS at, 'message' AS type, id, NULL AS actor_id, NULL AS kind,
               jsonb_build_object('subject', subject, 'snippet', snippet,
                                  'direction', direction, 'from', from_address) AS data
          FROM messages WHERE conversation_id = :cid
        UNION ALL
        SELECT created_at, 'note', id, author_id, NULL,
               jsonb_build_object('body', body, 'mentions', to_jsonb(mentions))
          FROM notes WHERE conversation_id = :cid
        UNION ALL
        -- zero-padded so activities of the same instant keep the order they were made in
        SELECT created_at, 'activity', 'act_' || lpad(id::text, 19, '0'), actor_id, kind, data
          FROM activities WHERE conversation_id = :cid
    ) entries
    WHERE (:after_at IS NULL OR (at, type, id) > (:after_at, :after_type, :after_id))
    ORDER BY at, type, id
    LIMIT :limit
    """
)


async def timeline(
    session: AsyncSession, conversation: Conversation, params: PageParams
) -> tuple[list[TimelineEntry], str | None]:
    after: list[object] = [None, None, None]
    if params.cursor is not None:
        after = decode_cursor(params.cursor, [datetime, str, str])
    rows = (
        await session.execute(
            _TIMELINE.bindparams(
                bindparam("after_at", type_=DateTime(timezone=True)),
                bindparam("after_type", type_=String),
                bindparam("after_id", type_=String),
            ),
            {
                "cid": conversation.id,
                "after_at": after[0],
                "after_type": after[1],
                "after_id": after[2],
                "limit": params.limit + 1,
            },
        )
    ).all()
    entries = [
        TimelineEntry(type=r.type, id=r.id, at=r.at, actor_id=r.actor_id, kind=r.kind, data=r.data)
        for r in rows[: params.limit]
    ]
    if len(rows) <= params.limit:
        return entries, None
    last = entries[-1]
    return entries, encode_cursor([last.at, last.type, last.id])
