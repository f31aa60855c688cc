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
from typing import Any, cast

from sqlalchemy import Table, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from inbox_service.assignment import service as assignment_service
from inbox_service.contacts.models import Contact
from inbox_service.conversations.activity import conversation_summary
from inbox_service.conversations.models import (
    Attachment,
    Conversation,
    Message,
    MessageLocation,
    MessageRaw,
)
from inbox_service.core.events import Event, EventType
from inbox_service.core.ids import new_id
from inbox_service.ingest.mime import Address, ParsedMessage, fallback_message_id
from inbox_service.ingest.subjects import base_subject, thread_index_guid
from inbox_service.replies import autoack
from inbox_service.rules import engine as rules_engine
from inbox_service.sla import hooks as sla_hooks

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


def message_summary(row: dict[str, Any]) -> dict[str, Any]:
    """The message as events carry it (from the row about to be inserted)."""
    return {
        "id": row["id"],
        "conversation_id": row["conversation_id"],
        "direction": row["direction"],
        "subject": row["subject"],
        "from": {"name": row["from_name"], "address": row["from_address"]},
        "snippet": row["snippet"],
        "threaded_by": row["threaded_by"],
        "auto_kind": row["auto_kind"],
        "parse_status": row["parse_status"],
        "received_at": row["received_at"].isoformat(),
    }


MESSAGES = cast("Table", Message.__table__)
RAWS = cast("Table", MessageRaw.__table__)
ATTACHMENTS = cast("Table", Attachment.__table__)
LOCATIONS = cast("Table", MessageLocation.__table__)
EVENTS = cast("Table", Event.__table__)


class ConcurrentIngest(Exception):
    """Another writer stored some of these messages first; the batch must be redone."""


async def stored_ids(session: AsyncSession, inbox_id: str, keys: Iterable[str]) -> dict[str, str]:
    """Dedupe key -> message id, for the keys this inbox already has."""
    rows = await session.execute(
        select(Message.dedupe_key, Message.id).where(
            Message.inbox_id == inbox_id, Message.dedupe_key.in_(set(keys))
        )
    )
    return dict(rows.all())


async def store_batch(
    session: AsyncSession, inbox: InboxContext, items: Sequence[Incoming], *, now: datetime
) -> StoreResult:
    """Store `items` (in server order) exactly once each; the caller commits.

    A batch costs about a dozen queries whatever its size: everything threading needs is
    fetched up front, messages are threaded in memory in order (so a reply and its parent
    in the same batch find each other), and rows are written with multi-row inserts.
    """
    result = StoreResult()
    if not items:
        return result
    keys = [dedupe_key_of(item) for item in items]
    known = await stored_ids(session, inbox.inbox_id, keys)
    batch = _Batch(session, inbox, now)
    await batch.prefetch([item for item, key in zip(items, keys, strict=True) if key not in known])
    for item, key in zip(items, keys, strict=True):
        if key in known:
            result.duplicates += 1
        else:
            known[key], created = await batch.plan(item, key)
            result.stored += 1
            result.conversations_created += int(created)
        batch.locate(item, known[key])
    await batch.write()
    # Priority rules, in this transaction: before anything that looks at the priority.
    await rules_engine.apply_to_ingested(
        session, batch.messages, batch.conversations.values(), now=now
    )
    # SLA clocks after the rules set the priority their targets depend on.
    await sla_hooks.on_messages(session, batch.sla_signals, now=now)
    await assignment_service.on_ingested(session, batch.events, now=now)
    # After rules and SLA: the acknowledgement may quote the expected response time.
    await autoack.on_new_conversations(session, inbox.inbox_id, batch.created, now=now)
    return result


def _tokens(parsed: ParsedMessage) -> list[str]:
    found = [
        m.group(1)
        for ref in (*parsed.references, *parsed.in_reply_to)
        if (m := TOKEN_RE.search(ref))
    ]
    found += [
        m.group(1) for a in (*parsed.to, *parsed.cc) if (m := PLUS_TOKEN_RE.search(a.address))
    ]
    return found


def _customer_of(inbox: InboxContext, parsed: ParsedMessage) -> Address | None:
    """The customer of a message: its sender, or for mail from the team the first
    recipient who is not on the team."""
    if not inbox.is_team(parsed.sender):
        return parsed.sender
    return next((a for a in (*parsed.to, *parsed.cc) if not inbox.is_team(a)), None)


def _guid(parsed: ParsedMessage) -> bytes | None:
    return thread_index_guid(parsed.thread_index) if parsed.thread_index else None


class _Batch:
    """The in-memory state of one batch: lookups, conversations touched, rows to write."""

    def __init__(self, session: AsyncSession, inbox: InboxContext, now: datetime) -> None:
        self.session = session
        self.inbox = inbox
        self.now = now
        self.contacts: dict[str, str] = {}  # lower-cased address -> contact id
        self.by_message_id: dict[str, str] = {}  # Message-ID -> conversation id
        self.by_child: dict[str, str] = {}  # Message-ID a stored reply points at -> its conv.
        self.by_token: dict[str, str] = {}
        self.by_guid: dict[bytes, str] = {}
        self.conversations: dict[str, Conversation] = {}
        self.messages: list[dict[str, Any]] = []
        self.raws: list[dict[str, Any]] = []
        self.attachments: list[dict[str, Any]] = []
        self.locations: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.created: list[autoack.FirstMessage] = []  # what auto-acknowledgement looks at
        self.sla_signals: list[sla_hooks.MessageSignal] = []  # for the SLA clocks

    async def prefetch(self, items: Sequence[Incoming]) -> None:
        """Everything threading may look up, for the whole batch, in a handful of queries."""
        inbox_id = self.inbox.inbox_id
        parsed = [item.parsed for item in items]
        await self._upsert_contacts(parsed)
        wanted = {
            mid for p in parsed for mid in (*p.in_reply_to, *p.references, *p.bounced_message_ids)
        }
        if wanted:
            parents = await self.session.execute(
                select(Message.message_id, Message.conversation_id).where(
                    Message.inbox_id == inbox_id,
                    Message.message_id.in_(wanted),
                    Message.conversation_id.is_not(None),
                )
            )
            self.by_message_id.update({mid: cid for mid, cid in parents if mid and cid})
        own_ids = [p.message_id for p in parsed if p.message_id]
        if own_ids:
            children = await self.session.execute(
                select(Message.parent_ids, Message.conversation_id).where(
                    Message.inbox_id == inbox_id,
                    Message.parent_ids.overlap(own_ids),
                    Message.conversation_id.is_not(None),
                )
            )
            own = set(own_ids)
            for parent_ids, cid in children:
                for parent in own.intersection(parent_ids or ()):
                    if cid is not None:
                        self.by_child.setdefault(parent, cid)
        tokens = {t for p in parsed for t in _tokens(p)}
        if tokens:
            tokened = await self.session.execute(
                select(Conversation.thread_token, Conversation.id).where(
                    Conversation.inbox_id == inbox_id, Conversation.thread_token.in_(tokens)
                )
            )
            self.by_token.update(dict(tokened.all()))
        guids = {g for p in parsed if (g := _guid(p)) is not None}
        if guids:
            indexed = await self.session.execute(
                select(Message.thread_index_guid, Message.conversation_id).where(
                    Message.inbox_id == inbox_id,
                    Message.thread_index_guid.in_(guids),
                    Message.conversation_id.is_not(None),
                )
            )
            self.by_guid.update({g: cid for g, cid in indexed if g and cid})
        ids = {
            *self.by_message_id.values(),
            *self.by_child.values(),
            *self.by_token.values(),
            *self.by_guid.values(),
        }
        if ids:
            found = list(
                await self.session.scalars(select(Conversation).where(Conversation.id.in_(ids)))
            )
            self.conversations.update({c.id: c for c in found})
            # Mail for a merged conversation goes where it was merged.
            targets = {c.merged_into_id for c in found if c.merged_into_id}
            if targets:
                merged = await self.session.scalars(
                    select(Conversation).where(Conversation.id.in_(targets))
                )
                into = {c.id: c for c in merged}
                for c in found:
                    if c.merged_into_id in into:
                        self.conversations[c.id] = into[c.merged_into_id]

    async def _upsert_contacts(self, parsed: Sequence[ParsedMessage]) -> None:
        people: dict[str, str | None] = {}
        for p in parsed:
            customer = _customer_of(self.inbox, p)
            if customer is not None and customer.address:
                email = customer.address.lower()
                people[email] = people.get(email) or customer.name
        if not people:
            return
        stmt = insert(Contact).values(
            [
                {
                    "id": new_id("ctc"),
                    "email": email,
                    "name": name,
                    "first_seen_at": self.now,
                    "created_at": self.now,
                    "updated_at": self.now,
                }
                for email, name in sorted(people.items())
            ]
        )
        # Learn a display name the first time one shows up; never overwrite one (or an edit).
        stmt = stmt.on_conflict_do_update(
            index_elements=[Contact.email],
            set_={"name": func.coalesce(Contact.name, stmt.excluded.name)},
        )
        rows = await self.session.execute(stmt.returning(Contact.email, Contact.id))
        self.contacts.update(dict(rows.all()))

    async def plan(self, item: Incoming, key: str) -> tuple[str, bool]:
        """Thread one new message and apply it to its conversation, in memory."""
        parsed = item.parsed
        at = effective_time(parsed, self.now)
        from_team = self.inbox.is_team(parsed.sender)
        customer = _customer_of(self.inbox, parsed)
        contact_id = self.contacts.get(customer.address.lower()) if customer else None
        conversation: Conversation | None = None
        threaded_by = "new"
        created = False
        if parsed.parse_status != "ok" and parsed.sender is None:
            pass  # not really mail, nothing to thread on: the inbox's quarantine keeps it raw
        else:
            conversation, threaded_by = await self._thread(parsed, contact_id, at)
            if conversation is None:
                conversation = self._new_conversation(parsed, contact_id, at)
                created = True
        row = self._message_row(item, key, conversation, threaded_by, from_team, at)
        if conversation is not None:
            self._remember(parsed, conversation.id)
            self._apply(conversation, row, created=created)
            if created:
                self.created.append(
                    autoack.FirstMessage(
                        conversation=conversation,
                        direction=row["direction"],
                        sender=row["from_address"],
                        auto_kind=row["auto_kind"],
                        message_id=row["message_id"],
                    )
                )
        return row["id"], created

    async def _thread(
        self, parsed: ParsedMessage, contact_id: str | None, at: datetime
    ) -> tuple[Conversation | None, str]:
        def by_ids(ids: Iterable[str]) -> str | None:
            return next(
                (cid for mid in reversed(list(ids)) if (cid := self.by_message_id.get(mid))), None
            )

        if parsed.auto == "bounce" and (cid := by_ids(parsed.bounced_message_ids)):
            return self.conversations[cid], "references"
        if cid := by_ids(parsed.in_reply_to):
            return self.conversations[cid], "in_reply_to"
        if cid := by_ids(parsed.references):
            return self.conversations[cid], "references"
        for token in _tokens(parsed):
            if cid := self.by_token.get(token):
                return self.conversations[cid], "token"
        guid = _guid(parsed)
        if guid is not None and (cid := self.by_guid.get(guid)):
            return self.conversations[cid], "thread_index"
        if parsed.message_id and (cid := self.by_child.get(parsed.message_id)):
            return self.conversations[cid], "references"
        found = await self._by_subject(parsed, contact_id, at)
        return (found, "subject") if found is not None else (None, "new")

    async def _by_subject(
        self, parsed: ParsedMessage, contact_id: str | None, at: datetime
    ) -> Conversation | None:
        """The last resort, bounded: only mail with no reply headers that says it is a
        reply (Re:, AW:, Fwd: …), from or to the conversation's contact, within the window."""
        if parsed.in_reply_to or parsed.references or self.inbox.subject_window <= timedelta(0):
            return None
        base = base_subject(parsed.subject)
        if not base or base == parsed.subject.strip().casefold():
            return None
        participants = {a.address.lower() for a in (*parsed.to, *parsed.cc)}
        if parsed.sender is not None:
            participants.add(parsed.sender.address.lower())
        participants -= self.inbox.team_addresses
        contact_ids = {self.contacts[a] for a in participants if a in self.contacts}
        if contact_id:
            contact_ids.add(contact_id)
        if not contact_ids:
            return None
        found = await self.session.scalar(
            select(Conversation)
            .where(
                Conversation.inbox_id == self.inbox.inbox_id,
                Conversation.base_subject == base,
                Conversation.merged_into_id.is_(None),
                Conversation.contact_id.in_(contact_ids),
                Conversation.last_message_at >= at - self.inbox.subject_window,
            )
            .order_by(Conversation.last_message_at.desc())
            .limit(1)
        )
        if found is not None:
            self.conversations.setdefault(found.id, found)
        return found

    def _new_conversation(
        self, parsed: ParsedMessage, contact_id: str | None, at: datetime
    ) -> Conversation:
        conversation = Conversation(
            id=new_id("cnv"),
            inbox_id=self.inbox.inbox_id,
            contact_id=contact_id,
            subject=parsed.subject,
            base_subject=base_subject(parsed.subject),
            thread_token=new_thread_token(),
            status="open",
            priority="normal",
            message_count=0,
            snippet="",
            last_message_at=at,
            waiting_since=None,
            version=1,
            created_at=self.now,
            updated_at=self.now,
        )
        self.session.add(conversation)
        self.conversations[conversation.id] = conversation
        return conversation

    def _remember(self, parsed: ParsedMessage, conversation_id: str) -> None:
        """Later messages of this batch thread onto this one as if it were stored."""
        if parsed.message_id:
            self.by_message_id[parsed.message_id] = conversation_id
        for parent in (*parsed.in_reply_to, *parsed.references):
            if parent not in self.by_message_id:
                self.by_child.setdefault(parent, conversation_id)
        if (guid := _guid(parsed)) is not None:
            self.by_guid.setdefault(guid, conversation_id)

    def _message_row(
        self,
        item: Incoming,
        key: str,
        conversation: Conversation | None,
        threaded_by: str,
        from_team: bool,
        at: datetime,
    ) -> dict[str, Any]:
        parsed, message_id = item.parsed, new_id("msg")
        sender = parsed.sender
        row = {
            "id": message_id,
            "inbox_id": self.inbox.inbox_id,
            "conversation_id": conversation.id if conversation else None,
            "direction": "outbound" if from_team else "inbound",
            "dedupe_key": key,
            "message_id": parsed.message_id,
            "in_reply_to": list(parsed.in_reply_to),
            "references": list(parsed.references),
            "parent_ids": list(dict.fromkeys([*parsed.in_reply_to, *parsed.references])),
            "thread_index_guid": _guid(parsed),
            "subject": parsed.subject,
            "from_name": sender.name if sender else None,
            "from_address": sender.address.lower() if sender else None,
            "to": _addresses(parsed.to),
            "cc": _addresses(parsed.cc),
            "reply_to": _addresses(parsed.reply_to),
            "sent_at": parsed.date,
            "received_at": at,
            "created_at": self.now,
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
        self.messages.append(row)
        self.raws.append({"message_id": message_id, "raw": item.raw})
        self.attachments.extend(
            {
                "id": new_id("att"),
                "message_id": message_id,
                "filename": a.filename,
                "content_type": a.content_type,
                "content_id": a.content_id,
                "inline": a.inline,
                "size": len(a.data),
                "data": a.data,
                "truncated": False,
            }
            for a in parsed.attachments
        )
        return row

    def _apply(self, conversation: Conversation, row: dict[str, Any], *, created: bool) -> None:
        """Counts, snippet, waiting time, reopening; the events follow in `write`."""
        conversation.message_count += 1
        conversation.last_message_at = max(conversation.last_message_at, row["received_at"])
        if row["snippet"]:
            conversation.snippet = row["snippet"]
        reopened = False
        if row["direction"] == "inbound" and row["auto_kind"] is None:
            self.sla_signals.append((conversation, "customer", row["received_at"]))
            conversation.waiting_since = conversation.waiting_since or row["received_at"]
            if conversation.status == "resolved":
                conversation.status = "open"
                reopened = True
        elif row["direction"] == "outbound":
            if row["auto_kind"] is None:  # our auto-ack is no answer
                self.sla_signals.append((conversation, "team", row["received_at"]))
            conversation.waiting_since = None  # we answered
        conversation.updated_at = self.now
        if not created:
            conversation.version += 1
        summary = conversation_summary(conversation)
        if created:
            self._event(EventType.CONVERSATION_CREATED, conversation, {"conversation": summary})
        self._event(
            EventType.MESSAGE_RECEIVED,
            conversation,
            {"conversation": summary, "message": message_summary(row)},
        )
        if reopened:
            self._event(
                EventType.CONVERSATION_STATUS_CHANGED,
                conversation,
                {
                    "conversation": summary,
                    "previous_status": "resolved",
                    "actor": None,
                    "reason": "customer_reply",
                },
            )

    def _event(
        self, event_type: EventType, conversation: Conversation, data: dict[str, Any]
    ) -> None:
        self.events.append(
            {
                "type": event_type.value,
                "data": data,
                "created_at": self.now,
                "inbox_id": conversation.inbox_id,
                "conversation_id": conversation.id,
            }
        )

    def locate(self, item: Incoming, message_id: str) -> None:
        if item.folder is not None and item.uidvalidity is not None and item.uid is not None:
            self.locations.append(
                {
                    "inbox_id": self.inbox.inbox_id,
                    "folder": item.folder,
                    "uidvalidity": item.uidvalidity,
                    "uid": item.uid,
                    "message_id": message_id,
                }
            )

    async def write(self) -> None:
        """Write the batch: conversations, messages, bytes, attachments, locations, events.

        Rows go in through Core tables as executemany of one cached statement each: the
        ORM's bulk path would split the rows by which values are None, and a multi-row
        VALUES is compiled afresh for every batch; either costs more than the database."""
        await self.session.flush()  # new and changed conversations first (foreign keys)
        if self.messages:
            inserted = await self.session.scalars(
                insert(MESSAGES).on_conflict_do_nothing().returning(MESSAGES.c.id), self.messages
            )
            if len(inserted.all()) != len(self.messages):
                raise ConcurrentIngest("some of these messages were stored concurrently")
            await self.session.execute(insert(RAWS), self.raws)
        if self.attachments:
            await self.session.execute(insert(ATTACHMENTS), self.attachments)
        if self.locations:
            await self.session.execute(insert(LOCATIONS).on_conflict_do_nothing(), self.locations)
        if self.events:
            await self.session.execute(insert(EVENTS), self.events)
