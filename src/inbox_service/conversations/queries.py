"""The conversation list: filters, sorts and keyset pages that stay stable for each sort.

Each sort is a key ending in the id, all ascending or all descending, and each has an index
that serves it (see the models). A cursor is the sort key of the last row; a row inserted
or changed meanwhile moves to its new place and is never returned twice on one walk of
unchanged rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    exists,
    func,
    literal_column,
    select,
    tuple_,
)
from sqlalchemy.ext.asyncio import AsyncSession

from inbox_service.contacts.models import Contact
from inbox_service.conversations.models import Conversation, ConversationTag, Message, Tag
from inbox_service.conversations.schemas import Sort
from inbox_service.core.auth import Caller
from inbox_service.core.errors import Invalid
from inbox_service.core.pagination import (
    NullableDatetime,
    PageParams,
    decode_cursor,
    encode_cursor,
)

INFINITY: ColumnElement[datetime] = literal_column("'infinity'::timestamptz")
_WAITING = func.coalesce(Conversation.waiting_since, INFINITY)


@dataclass(frozen=True)
class Filters:
    inbox_id: str | None = None
    status: tuple[str, ...] = ()
    assignee: str | None = None  # "me", "none" or a user id
    priority: tuple[str, ...] = ()
    tag: str | None = None
    contact_id: str | None = None
    q: str | None = None


@dataclass(frozen=True)
class _SortKey:
    columns: tuple[Any, ...]
    types: tuple[type, ...]
    descending: bool


SORTS: dict[str, _SortKey] = {
    "newest": _SortKey((Conversation.last_message_at, Conversation.id), (datetime, str), True),
    "oldest": _SortKey((Conversation.last_message_at, Conversation.id), (datetime, str), False),
    "waiting_longest": _SortKey((_WAITING, Conversation.id), (NullableDatetime, str), False),
    "priority": _SortKey(
        (Conversation.priority_rank, _WAITING, Conversation.id),
        (int, NullableDatetime, str),
        False,
    ),
}


def _key_of(conversation: Conversation, sort: str) -> list[Any]:
    waiting = conversation.waiting_since  # None stands for 'infinity' in the cursor
    if sort in ("newest", "oldest"):
        return [conversation.last_message_at, conversation.id]
    if sort == "waiting_longest":
        return [waiting, conversation.id]
    return [conversation.priority_rank, waiting, conversation.id]


def _after(sort: str, cursor: str) -> ColumnElement[bool]:
    key = SORTS[sort]
    # The sort's name leads the cursor: a cursor of another sort (same key shape or not)
    # would silently start the walk at a wrong place.
    name, *decoded = decode_cursor(cursor, (str, *key.types))
    if name != sort:
        raise Invalid("cursor belongs to another sort", loc=["query", "cursor"])
    values = [INFINITY if value is None else value for value in decoded]
    position = tuple_(*key.columns)
    return position < tuple_(*values) if key.descending else position > tuple_(*values)


def _filtered(caller: Caller, filters: Filters) -> Select[Conversation, Contact]:
    stmt = select(Conversation, Contact).outerjoin(Contact, Contact.id == Conversation.contact_id)
    stmt = stmt.where(caller.scope(Conversation.inbox_id), Conversation.merged_into_id.is_(None))
    if filters.inbox_id:
        stmt = stmt.where(Conversation.inbox_id == filters.inbox_id)
    if filters.status:
        stmt = stmt.where(Conversation.status.in_(filters.status))
    if filters.priority:
        stmt = stmt.where(Conversation.priority.in_(filters.priority))
    if filters.assignee == "me":
        stmt = stmt.where(Conversation.assignee_id == caller.user_id)
    elif filters.assignee == "none":
        stmt = stmt.where(Conversation.assignee_id.is_(None))
    elif filters.assignee:
        stmt = stmt.where(Conversation.assignee_id == filters.assignee)
    if filters.contact_id:
        stmt = stmt.where(Conversation.contact_id == filters.contact_id)
    if filters.tag:
        stmt = stmt.where(
            exists()
            .where(ConversationTag.conversation_id == Conversation.id)
            .where(ConversationTag.tag_id == Tag.id)
            .where(func.lower(Tag.name) == filters.tag.lower())
        )
    if filters.q:
        # Uncorrelated, so PostgreSQL runs it once (through the GIN index) and hashes the
        # ids, instead of once per conversation; each message's vector has its subject too.
        query = func.websearch_to_tsquery(literal_column("'simple'::regconfig"), filters.q)
        matching = select(Message.conversation_id).where(
            Message.search_vector.bool_op("@@")(query), caller.scope(Message.inbox_id)
        )
        if filters.inbox_id:
            matching = matching.where(Message.inbox_id == filters.inbox_id)
        stmt = stmt.where(Conversation.id.in_(matching))
    return stmt


async def list_conversations(
    session: AsyncSession, caller: Caller, filters: Filters, sort: Sort, page: PageParams
) -> tuple[list[tuple[Conversation, Contact | None]], str | None]:
    key = SORTS[sort]
    stmt = _filtered(caller, filters)
    if page.cursor is not None:
        stmt = stmt.where(_after(sort, page.cursor))
    order = [c.desc() if key.descending else c.asc() for c in key.columns]
    result = await session.execute(stmt.order_by(*order).limit(page.limit + 1))
    rows: list[tuple[Conversation, Contact | None]] = [(c, ct) for c, ct in result.all()]
    if len(rows) <= page.limit:
        return rows, None
    rows = rows[: page.limit]
    return rows, encode_cursor([sort, *_key_of(rows[-1][0], sort)])


async def tags_of(session: AsyncSession, conversation_ids: list[str]) -> dict[str, list[str]]:
    """Tag names per conversation, for a page of them, in one query."""
    if not conversation_ids:
        return {}
    rows = await session.execute(
        select(ConversationTag.conversation_id, Tag.name)
        .join(Tag, Tag.id == ConversationTag.tag_id)
        .where(ConversationTag.conversation_id.in_(conversation_ids))
        .order_by(func.lower(Tag.name))
    )
    tags: dict[str, list[str]] = {}
    for conversation_id, name in rows:
        tags.setdefault(conversation_id, []).append(name)
    return tags
