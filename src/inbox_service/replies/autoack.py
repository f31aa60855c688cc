"""Auto-acknowledgement of new conversations (RFC 3834), enqueued in ingest's transaction.

Never to: mail classified as automatic at ingest (`Auto-Submitted` other than `no`,
`Precedence: bulk|list|junk|auto_reply`, `List-Id`/`List-Unsubscribe`, X-Autoreply and
friends, null Return-Path, mailer-daemon/no-reply senders, bounces); our own addresses
(any inbox's, the team's: their mail is stored as outbound); Message-IDs on the inbox's
own domain (our mail coming back). At most one per sender per inbox per window, claimed
atomically in `auto_ack_senders`. The acknowledgement carries `Auto-Submitted:
auto-replied` and `X-Auto-Response-Suppress: All`, is sent at once (no undo window), and
counts neither as a first response nor as an answer (the customer still waits).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from inbox_service.conversations.models import Conversation
from inbox_service.core.errors import AppError
from inbox_service.inboxes.models import Inbox
from inbox_service.replies import outbox
from inbox_service.replies.mime import HeaderInjection, Recipient, domain_of, reply_subject
from inbox_service.replies.models import AutoAckSent
from inbox_service.templates import context as template_context
from inbox_service.templates import render
from inbox_service.templates.models import Template
from inbox_service.templates.render import TemplateProblem

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FirstMessage:
    """The message that opened a conversation, as ingest saw it."""

    conversation: Conversation
    direction: str
    sender: str | None
    auto_kind: str | None
    message_id: str | None


def skip_reason(first: FirstMessage, own_addresses: set[str], own_domain: str) -> str | None:
    """Why this message gets no acknowledgement (None: it gets one)."""
    if first.direction != "inbound":
        return "from the team"
    if first.auto_kind is not None:
        return f"automatic mail ({first.auto_kind})"
    if not first.sender:
        return "no sender"
    if first.sender.lower() in own_addresses:
        return "one of our own addresses"
    if first.message_id and domain_of(first.message_id) == own_domain:
        return "our own mail coming back"
    return None


async def _claim_sender(session: AsyncSession, inbox: Inbox, address: str, now: datetime) -> bool:
    """True if no acknowledgement went to `address` within the window (and record this one)."""
    stmt = insert(AutoAckSent).values(inbox_id=inbox.id, address=address, last_sent_at=now)
    stmt = stmt.on_conflict_do_update(
        index_elements=[AutoAckSent.inbox_id, AutoAckSent.address],
        set_={"last_sent_at": stmt.excluded.last_sent_at},
        where=AutoAckSent.last_sent_at <= now - timedelta(seconds=inbox.auto_ack_window_seconds),
    )
    return await session.scalar(stmt.returning(AutoAckSent.address)) is not None


async def on_new_conversations(
    session: AsyncSession, inbox_id: str, firsts: Sequence[FirstMessage], *, now: datetime
) -> int:
    """Enqueue the acknowledgements due for these new conversations; how many."""
    if not firsts:
        return 0
    inbox = await session.get(Inbox, inbox_id)
    if inbox is None or not inbox.auto_ack_enabled or not outbox.can_send(inbox):
        return 0
    template = (
        await session.get(Template, inbox.auto_ack_template_id)
        if inbox.auto_ack_template_id
        else None
    )
    if template is None or template.inbox_id not in (None, inbox.id):
        log.warning("inbox %s: auto-ack template is missing; nothing sent", inbox.id)
        return 0
    own = set(await session.scalars(select(func.lower(Inbox.address))))
    own_domain = domain_of(inbox.address)
    sent = 0
    for first in firsts:
        reason = skip_reason(first, own, own_domain)
        if reason is not None or first.sender is None:
            log.info("no auto-ack for conversation %s: %s", first.conversation.id, reason)
            continue
        if not await _claim_sender(session, inbox, first.sender.lower(), now):
            log.info("no auto-ack for conversation %s: sender within window", first.conversation.id)
            continue
        try:
            values = await template_context.build(
                session, first.conversation, agent=None, inbox=inbox
            )
            text = render.render(template.body, values)
            subject = (
                render.render(template.subject, values)
                if template.subject
                else reply_subject(first.conversation.subject)
            )
            draft = outbox.Draft(
                text=text,
                html=None,
                subject=subject,
                to=[Recipient(first.sender.lower())],
                cc=[],
                from_name=inbox.name,
                send_at=now,
                kind="auto_ack",
                template_id=template.id,
            )
            await outbox.enqueue(session, first.conversation, inbox, draft, now=now)
        except (AppError, TemplateProblem, HeaderInjection) as exc:
            # an acknowledgement must never cost us the mail it acknowledges
            log.warning("no auto-ack for conversation %s: %s", first.conversation.id, exc)
            continue
        sent += 1
    return sent
