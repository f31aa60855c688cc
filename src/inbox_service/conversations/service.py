"""Conversations and their messages, as the API reads them."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from inbox_service.conversations.models import Attachment, Message, MessageRaw
from inbox_service.conversations.schemas import AddressOut, AttachmentOut, MessageOut
from inbox_service.core.auth import Caller
from inbox_service.core.errors import NotFound
from inbox_service.ingest.mime import sanitize_html


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
