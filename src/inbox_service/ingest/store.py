"""Store fetched mail: dedupe, thread, and write rows and events in the caller's transaction.

Threading, first match wins (each message records which rule placed it, `threaded_by`):

1. `in_reply_to`: its In-Reply-To names a message of this inbox;
2. `references`: one of its References does (latest first);
3. `token`: a referenced id or a `+token` recipient carries one of our conversation tokens
   (our outbound Message-IDs are `<ulid.TOKEN@domain>`);
4. `thread_index`: Outlook's Thread-Index GUID matches a message of this inbox;
5. `references` (children first): a message already stored names *this* one as its
   parent (a reply that was fetched before its parent);
6. `subject`: no reply headers at all, a reply/forward prefix, the same base subject
   (RFC 5256), a conversation of the same contact active within the window;
7. `new`: a new conversation. A bounce joins the conversation of the mail it bounced.

Deduplication is the unique key `(inbox_id, dedupe_key)`: the Message-ID, or a hash of
the raw bytes when there is none. Whatever is fetched twice (after a crash, by a second
worker, after a UIDVALIDITY change) is recognised and only its location is recorded.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from inbox_service.contacts.models import Contact
from inbox_service.conversations.models import (
    Attachment,
    Conversation,
    Message,
    MessageLocation,
    MessageRaw,
)
from inbox_service.core.events import EventType, emit
from inbox_service.core.ids import new_id
from inbox_service.ingest.mime import Address, ParsedMessage, fallback_message_id
from inbox_service.ingest.subjects import base_subject, thread_index_guid

TOKEN_RE = re.compile(r"\.([0-9a-f]{16})@")
PLUS_TOKEN_RE = re.compile(r"\+([0-9a-f]{16})@")
# A Date header this far in the future is a lie; such mail counts as received when fetched.
MAX_CLOCK_SKEW = timedelta(days=1)


@dataclass(frozen=True)
class Incoming:
    """One fetched message: where it was, its bytes, and what the parser made of them."""

    raw: bytes
    parsed: ParsedMessage
    folder: str | None = None
    uidvalidity: int | None = None
    uid: int | None = None


@dataclass(frozen=True)
class InboxContext:
    """What threading needs to know about the inbox. `team_addresses` are the inbox's own
    address and its users' addresses: mail from them is our side of the conversation
    (an agent answering from their own mail client with the inbox in Cc)."""

    inbox_id: str
    team_addresses: frozenset[str]
    subject_window: timedelta = timedelta(days=30)

    def is_team(self, address: Address | None) -> bool:
        return address is not None and address.address.lower() in self.team_addresses


@dataclass
class StoreResult:
    stored: int = 0
    duplicates: int = 0
    conversations_created: int = 0


def new_thread_token() -> str:
    return secrets.token_hex(8)


def effective_time(parsed: ParsedMessage, now: datetime) -> datetime:
    """When the message happened: its Date header, unless missing or in the future."""
    if parsed.date is None or parsed.date > now + MAX_CLOCK_SKEW:
        return now
    return parsed.date


def dedupe_key_of(item: Incoming) -> str:
    return item.parsed.message_id or fallback_message_id(item.raw)


def _addresses(addresses: Iterable[Address]) -> list[dict[str, Any]]:
    return [{"name": a.name, "address": a.address} for a in addresses]


def conversation_summary(conversation: Conversation) -> dict[str, Any]:
    """The conversation as events carry it."""
    return {
        "id": conversation.id,
        "inbox_id": conversation.inbox_id,
        "contact_id": conversation.contact_id,
        "subject": conversation.subject,
        "status": conversation.status,
        "priority": conversation.priority,
        "assignee_id": conversation.assignee_id,
        "message_count": conversation.message_count,
        "last_message_at": conversation.last_message_at.isoformat(),
        "waiting_since": conversation.waiting_since.isoformat()
        if conversation.waiting_since
        else None,
    }


def message_summary(message: Message) -> dict[str, Any]:
    return {
        "id": message.id,
        "conversation_id": message.conversation_id,
        "direction": message.direction,
        "subject": message.subject,
        "from": {"name": message.from_name, "address": message.from_address},
        "snippet": message.snippet,
        "threaded_by": message.threaded_by,
        "auto_kind": message.auto_kind,
        "parse_status": message.parse_status,
        "received_at": message.received_at.isoformat(),
    }


async def store_batch(
    session: AsyncSession, inbox: InboxContext, items: Sequence[Incoming], *, now: datetime
) -> StoreResult:
    """Store `items` (in server order) exactly once each; the caller commits."""
    result = StoreResult()
    keys = [dedupe_key_of(item) for item in items]
    rows = await session.execute(
        select(Message.dedupe_key, Message.id).where(
            Message.inbox_id == inbox.inbox_id, Message.dedupe_key.in_(set(keys))
        )
    )
    known: dict[str, str] = dict(rows.all())
    for item, key in zip(items, keys, strict=True):
        message_id = known.get(key)
        if message_id is None:
            message, created = await _store_one(session, inbox, item, key, now=now)
            if message is None:  # stored concurrently by someone else: a duplicate after all
                result.duplicates += 1
                continue
            known[key] = message_id = message.id
            result.stored += 1
            result.conversations_created += int(created)
        else:
            result.duplicates += 1
        await _record_location(session, inbox, item, message_id)
    return result


async def _record_location(
    session: AsyncSession, inbox: InboxContext, item: Incoming, message_id: str
) -> None:
    if item.folder is None or item.uidvalidity is None or item.uid is None:
        return
    await session.execute(
        insert(MessageLocation)
        .values(
            inbox_id=inbox.inbox_id,
            folder=item.folder,
            uidvalidity=item.uidvalidity,
            uid=item.uid,
            message_id=message_id,
        )
        .on_conflict_do_nothing()
    )


async def _store_one(
    session: AsyncSession, inbox: InboxContext, item: Incoming, key: str, *, now: datetime
) -> tuple[Message | None, bool]:
    parsed = item.parsed
    if parsed.parse_status != "ok" and parsed.sender is None:
        # Not really mail, nothing to thread on: keep it, raw, in the inbox's quarantine.
        return await _insert_message(session, inbox, item, key, None, "new", now=now), False

    at = effective_time(parsed, now)
    from_team = inbox.is_team(parsed.sender)
    customer = _customer_of(inbox, parsed) if from_team else parsed.sender
    contact = await _upsert_contact(session, customer, now=now)
    conversation, threaded_by = await _find_conversation(session, inbox, parsed, contact, at)
    created = conversation is None
    if conversation is None:
        conversation = await _new_conversation(session, inbox, parsed, contact, at=at, now=now)
    message = await _insert_message(
        session,
        inbox,
        item,
        key,
        conversation,
        threaded_by,
        direction="outbound" if from_team else "inbound",
        now=now,
    )
    if message is None:
        if created:
            await session.delete(conversation)
        return None, False
    await _apply_to_conversation(session, conversation, message, created=created, now=now)
    return message, created


def _customer_of(inbox: InboxContext, parsed: ParsedMessage) -> Address | None:
    """For mail from the team: the first recipient who is not on the team."""
    return next((a for a in (*parsed.to, *parsed.cc) if not inbox.is_team(a)), None)


async def _upsert_contact(
    session: AsyncSession, sender: Address | None, *, now: datetime
) -> Contact | None:
    if sender is None or not sender.address:
        return None
    email = sender.address.lower()
    contact_id = await session.scalar(
        insert(Contact)
        .values(
            id=new_id("ctc"),
            email=email,
            name=sender.name,
            first_seen_at=now,
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_update(
            index_elements=[Contact.email],
            # Learn a display name the first time one shows up; never overwrite an edit.
            set_={"name": func.coalesce(Contact.name, sender.name)},
        )
        .returning(Contact.id)
    )
    return await session.get(Contact, contact_id)


async def _conversation_of_message_ids(
    session: AsyncSession, inbox_id: str, message_ids: Sequence[str]
) -> Conversation | None:
    """The conversation of the latest-listed id that is known here."""
    if not message_ids:
        return None
    rows = await session.execute(
        select(Message.message_id, Message.conversation_id).where(
            Message.inbox_id == inbox_id,
            Message.message_id.in_(message_ids),
            Message.conversation_id.is_not(None),
        )
    )
    conversation_of: dict[str | None, str | None] = dict(rows.all())
    for mid in reversed(message_ids):
        if (conversation_id := conversation_of.get(mid)) is not None:
            return await session.get(Conversation, conversation_id)
    return None


def _tokens(parsed: ParsedMessage) -> list[str]:
    tokens = [
        m.group(1)
        for ref in parsed.references + parsed.in_reply_to
        for m in [TOKEN_RE.search(ref)]
        if m
    ]
    for address in (*parsed.to, *parsed.cc):
        if match := PLUS_TOKEN_RE.search(address.address):
            tokens.append(match.group(1))
    return tokens


async def _find_conversation(
    session: AsyncSession,
    inbox: InboxContext,
    parsed: ParsedMessage,
    contact: Contact | None,
    at: datetime,
) -> tuple[Conversation | None, str]:
    inbox_id = inbox.inbox_id
    if parsed.auto == "bounce" and parsed.bounced_message_ids:
        found = await _conversation_of_message_ids(session, inbox_id, parsed.bounced_message_ids)
        if found is not None:
            return found, "references"
    if found := await _conversation_of_message_ids(session, inbox_id, parsed.in_reply_to):
        return found, "in_reply_to"
    if found := await _conversation_of_message_ids(session, inbox_id, parsed.references):
        return found, "references"
    for token in _tokens(parsed):
        found = await session.scalar(
            select(Conversation).where(
                Conversation.inbox_id == inbox_id, Conversation.thread_token == token
            )
        )
        if found is not None:
            return found, "token"
    guid = thread_index_guid(parsed.thread_index) if parsed.thread_index else None
    if guid is not None:
        conversation_id = await session.scalar(
            select(Message.conversation_id)
            .where(
                Message.inbox_id == inbox_id,
                Message.thread_index_guid == guid,
                Message.conversation_id.is_not(None),
            )
            .limit(1)
        )
        if conversation_id is not None:
            return await session.get(Conversation, conversation_id), "thread_index"
    if parsed.message_id:
        conversation_id = await session.scalar(
            select(Message.conversation_id)
            .where(
                Message.inbox_id == inbox_id,
                Message.parent_ids.contains([parsed.message_id]),
                Message.conversation_id.is_not(None),
            )
            .limit(1)
        )
        if conversation_id is not None:
            return await session.get(Conversation, conversation_id), "references"
    found = await _by_subject(session, inbox, parsed, contact, at)
    if found is not None:
        return found, "subject"
    return None, "new"


async def _by_subject(
    session: AsyncSession,
    inbox: InboxContext,
    parsed: ParsedMessage,
    contact: Contact | None,
    at: datetime,
) -> Conversation | None:
    """The last resort, bounded: only mail with no reply headers that says it is a reply."""
    if parsed.in_reply_to or parsed.references:
        return None
    base = base_subject(parsed.subject)
    if not base or base == parsed.subject.strip().casefold():
        return None  # no Re:/Fwd:/AW: prefix: a new topic, even with a familiar subject
    participants = {a.address.lower() for a in (*parsed.to, *parsed.cc)}
    if contact is not None:
        participants.add(contact.email)
    participants -= inbox.team_addresses
    if not participants:
        return None
    stmt = (
        select(Conversation)
        .join(Contact, Contact.id == Conversation.contact_id)
        .where(
            Conversation.inbox_id == inbox.inbox_id,
            Conversation.base_subject == base,
            Contact.email.in_(participants),
            Conversation.last_message_at >= at - inbox.subject_window,
        )
        .order_by(Conversation.last_message_at.desc())
        .limit(1)
    )
    return await session.scalar(stmt)


async def _new_conversation(
    session: AsyncSession,
    inbox: InboxContext,
    parsed: ParsedMessage,
    contact: Contact | None,
    *,
    at: datetime,
    now: datetime,
) -> Conversation:
    conversation = Conversation(
        id=new_id("cnv"),
        inbox_id=inbox.inbox_id,
        contact_id=contact.id if contact else None,
        subject=parsed.subject,
        base_subject=base_subject(parsed.subject),
        thread_token=new_thread_token(),
        status="open",
        priority="normal",
        message_count=0,
        snippet="",
        last_message_at=at,
        version=1,
        created_at=now,
        updated_at=now,
    )
    session.add(conversation)
    await session.flush()
    return conversation


async def _insert_message(
    session: AsyncSession,
    inbox: InboxContext,
    item: Incoming,
    key: str,
    conversation: Conversation | None,
    threaded_by: str,
    *,
    direction: str = "inbound",
    now: datetime,
) -> Message | None:
    parsed = item.parsed
    message_id = new_id("msg")
    sender = parsed.sender
    values: dict[str, Any] = {
        "id": message_id,
        "inbox_id": inbox.inbox_id,
        "conversation_id": conversation.id if conversation else None,
        "direction": direction,
        "dedupe_key": key,
        "message_id": parsed.message_id,
        "in_reply_to": list(parsed.in_reply_to),
        "references": list(parsed.references),
        "parent_ids": list(dict.fromkeys([*parsed.in_reply_to, *parsed.references])),
        "thread_index_guid": thread_index_guid(parsed.thread_index)
        if parsed.thread_index
        else None,
        "subject": parsed.subject,
        "from_name": sender.name if sender else None,
        "from_address": sender.address.lower() if sender else None,
        "to": _addresses(parsed.to),
        "cc": _addresses(parsed.cc),
        "reply_to": _addresses(parsed.reply_to),
        "sent_at": parsed.date,
        "received_at": effective_time(parsed, now),
        "created_at": now,
        "text_body": parsed.text,
        "html_body": parsed.html,
        "snippet": parsed.snippet,
        "threaded_by": threaded_by,
        "auto_kind": parsed.auto,
        "parse_status": parsed.parse_status,
        "parse_error": parsed.parse_error,
        "size": len(item.raw),
        "raw_sha256": hashlib.sha256(item.raw).hexdigest(),
    }
    inserted = await session.scalar(
        insert(Message).values(**values).on_conflict_do_nothing().returning(Message.id)
    )
    if inserted is None:
        return None
    session.add(MessageRaw(message_id=message_id, raw=item.raw))
    for attachment in parsed.attachments:
        session.add(
            Attachment(
                id=new_id("att"),
                message_id=message_id,
                filename=attachment.filename,
                content_type=attachment.content_type,
                content_id=attachment.content_id,
                inline=attachment.inline,
                size=len(attachment.data),
                data=attachment.data,
                truncated=False,
            )
        )
    await session.flush()
    return await session.get_one(Message, message_id)


async def _apply_to_conversation(
    session: AsyncSession,
    conversation: Conversation,
    message: Message,
    *,
    created: bool,
    now: datetime,
) -> None:
    """Counts, snippet, waiting time, reopening; and the events, in this transaction."""
    from_customer = message.direction == "inbound" and message.auto_kind is None
    conversation.message_count += 1
    conversation.last_message_at = max(conversation.last_message_at, message.received_at)
    if message.snippet:
        conversation.snippet = message.snippet
    reopened = False
    if from_customer:
        conversation.waiting_since = conversation.waiting_since or message.received_at
        if conversation.status == "resolved":
            conversation.status = "open"
            reopened = True
    elif message.direction == "outbound":
        conversation.waiting_since = None  # we answered
    conversation.updated_at = now
    conversation.version += 1
    await session.flush()
    inbox_id, conversation_id = conversation.inbox_id, conversation.id
    if created:
        await emit(
            session,
            EventType.CONVERSATION_CREATED,
            {"conversation": conversation_summary(conversation)},
            now=now,
            inbox_id=inbox_id,
            conversation_id=conversation_id,
        )
    await emit(
        session,
        EventType.MESSAGE_RECEIVED,
        {"conversation": conversation_summary(conversation), "message": message_summary(message)},
        now=now,
        inbox_id=inbox_id,
        conversation_id=conversation_id,
    )
    if reopened:
        await emit(
            session,
            EventType.CONVERSATION_STATUS_CHANGED,
            {
                "conversation": conversation_summary(conversation),
                "previous_status": "resolved",
                "actor": None,
                "reason": "customer_reply",
            },
            now=now,
            inbox_id=inbox_id,
            conversation_id=conversation_id,
        )
