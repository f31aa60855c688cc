"""The conversation list: filters, sorts and keyset pages that stay stable for each sort.

Each sort is a key ending in the id, all ascending or all descending, and each has an index
that serves it (see the models). A cursor is the sort key of the last row; a row inserted
or changed meanwhile moves to its new place and is never returned twice on one walk of
unchanged rows.

The list is the API's busiest read, so its SQL is built once per shape (which filters, which
sort, which scope, a cursor or not) with every value a bound parameter, and read as plain
columns: building the statement and loading 50 ORM entities cost more than running it.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeAlias

from sqlalchemy import (
    ColumnElement,
    Integer,
    Row,
    Select,
    any_,
    bindparam,
    exists,
    false,
    func,
    literal_column,
    select,
    text,
    tuple_,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.base import ReadOnlyColumnCollection
from sqlalchemy.types import String

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

_conversations = Conversation.__table__
_contacts = Contact.__table__
_messages = Message.__table__
_conversation_tags = ConversationTag.__table__
_tags = Tag.__table__
_c = _conversations.c

INFINITY: ColumnElement[datetime] = literal_column("'infinity'::timestamptz")

# Search. Few matching messages are best read through the GIN index first (each costs a
# heap read, ~6 µs), many by walking the sort order and probing each conversation's
# messages until a page is full (~10 message reads per conversation; a common word fills
# it quickly). On a million messages both cost the same at ~10,000 matches. PostgreSQL
# gets this wrong when left to itself: a word outside its statistics' most common ones is
# assumed to be in up to 0.5 % of messages, whether it is in none or in a hundred, and it
# walks; for a rare word that walk reads every conversation (seconds). So the list asks
# for the planner's estimate of the matches first (EXPLAIN: planned, not run), which is
# accurate for the common words, and walks for those; for the others it counts.
SEARCH_WALK_MIN_MATCHES = 10_000

# What a list row shows (ConversationOut's fields), the sort keys and whether it has SLA
# clocks, in this order; the contact's columns are joined to the page once it is cut, and
# the tag names follow (see _statement).
_PAGE_COLUMNS = (
    "id",
    "inbox_id",
    "subject",
    "status",
    "priority",
    "priority_source",
    "assignee_id",
    "contact_id",
    "snippet",
    "message_count",
    "last_message_at",
    "waiting_since",
    "snoozed_until",
    "merged_into_id",
    "created_at",
    "updated_at",
    "version",
    "priority_rank",
    "sla_due_at",
    "sla_policy_id",
)

ListRow: TypeAlias = Row[*tuple[Any, ...]]


@dataclass(frozen=True)
class Filters:
    inbox_id: str | None = None
    status: tuple[str, ...] = ()
    assignee: str | None = None  # "me", "none" or a user id
    priority: tuple[str, ...] = ()
    tag: str | None = None
    contact_id: str | None = None
    q: str | None = None
    sla: str | None = None  # "at_risk" | "breached"


@dataclass(frozen=True)
class _SortKey:
    names: tuple[str, ...]  # columns; "waiting" is coalesce(waiting_since, 'infinity')
    types: tuple[type, ...]
    descending: bool

    def columns(self, c: ReadOnlyColumnCollection[str, Any]) -> list[ColumnElement[Any]]:
        """The key over `c`: the conversations table or the page cut from it."""
        return [
            func.coalesce(c.waiting_since, INFINITY)
            if name == "waiting"
            else func.coalesce(c.sla_due_at, INFINITY)
            if name == "sla_due"
            else c[name]
            for name in self.names
        ]

    def order(self, c: ReadOnlyColumnCollection[str, Any]) -> list[ColumnElement[Any]]:
        return [col.desc() if self.descending else col.asc() for col in self.columns(c)]


SORTS: dict[str, _SortKey] = {
    "newest": _SortKey(("last_message_at", "id"), (datetime, str), True),
    "oldest": _SortKey(("last_message_at", "id"), (datetime, str), False),
    "waiting_longest": _SortKey(("waiting", "id"), (NullableDatetime, str), False),
    "priority": _SortKey(("priority_rank", "waiting", "id"), (int, NullableDatetime, str), False),
    # Earliest SLA due time first; conversations without running clocks last.
    "sla_due": _SortKey(("sla_due", "id"), (NullableDatetime, str), False),
}


@dataclass(frozen=True)
class _Shape:
    """What the SQL of a list query depends on; every value is bound when it runs."""

    sort: str
    scope: Literal["all", "none", "some"]  # Caller.scope: admin, no inbox, some inboxes
    inbox: bool
    status: bool
    priority: bool
    assignee: Literal["", "none", "one"]
    tag: bool
    contact: bool
    search: Literal["", "matches_first", "walk"]
    after: tuple[bool, ...] | None  # a cursor: per key value, whether it is 'infinity'
    sla: str = ""  # "", "at_risk" or "breached"


def _key_of(row: ListRow, sort: str) -> list[Any]:
    waiting = row.waiting_since  # None stands for 'infinity' in the cursor
    if sort in ("newest", "oldest"):
        return [row.last_message_at, row.id]
    if sort == "waiting_longest":
        return [waiting, row.id]
    if sort == "sla_due":
        return [row.sla_due_at, row.id]
    return [row.priority_rank, waiting, row.id]


def _cursor_values(sort: str, cursor: str) -> list[Any]:
    # The sort's name leads the cursor: a cursor of another sort (same key shape or not)
    # would silently start the walk at a wrong place.
    name, *values = decode_cursor(cursor, (str, *SORTS[sort].types))
    if name != sort:
        raise Invalid("cursor belongs to another sort", loc=["query", "cursor"])
    return values


def _text_match(q: Any) -> ColumnElement[bool]:
    query = func.websearch_to_tsquery(literal_column("'simple'::regconfig"), q)
    return _messages.c.search_vector.bool_op("@@")(query)


@functools.lru_cache(maxsize=512)
def _statement(shape: _Shape) -> Select[Any]:
    """The list query of `shape`, built once; list_conversations binds its values."""
    key = SORTS[shape.sort]
    page = select(*(_c[name] for name in _PAGE_COLUMNS)).where(_c.merged_into_id.is_(None))
    # Caller.scope, with the caller's inboxes bound as a parameter: one statement for all.
    if shape.scope == "none":
        page = page.where(false())
    elif shape.scope == "some":
        page = page.where(_c.inbox_id.in_(bindparam("scope", expanding=True)))
    if shape.inbox:
        page = page.where(_c.inbox_id == bindparam("inbox_id"))
    if shape.status:
        page = page.where(_c.status.in_(bindparam("status", expanding=True)))
    if shape.priority:
        page = page.where(_c.priority.in_(bindparam("priority", expanding=True)))
    if shape.assignee == "none":
        page = page.where(_c.assignee_id.is_(None))
    elif shape.assignee == "one":
        page = page.where(_c.assignee_id == bindparam("assignee_id"))
    if shape.contact:
        page = page.where(_c.contact_id == bindparam("contact_id"))
    # SLA states are times compared with now: overdue (the earliest running due time has
    # passed), or inside a warning lead and not yet overdue. Sorted by due time, overdue
    # is a range of the sla_due indexes. Otherwise both are among the conversations whose
    # warning time passed (sla_warn_at is the due time where no warning is set), read
    # first from their index: few, unless a team is far behind.
    now = bindparam("now", type_=_c.sla_due_at.type)
    if shape.sla == "breached" and shape.sort == "sla_due":
        page = page.where(func.coalesce(_c.sla_due_at, INFINITY) <= now)
    elif shape.sla:
        warned = _conversations.alias("warned")
        overdue = warned.c.sla_due_at <= now
        matching = select(warned.c.id).where(
            warned.c.sla_warn_at <= now, overdue if shape.sla == "breached" else ~overdue
        )
        page = page.where(_c.id == any_(func.array(matching.scalar_subquery())))
    if shape.tag:
        page = page.where(
            exists()
            .where(_conversation_tags.c.conversation_id == _c.id)
            .where(_conversation_tags.c.tag_id == _tags.c.id)
            .where(func.lower(_tags.c.name) == bindparam("tag"))
        )
    if shape.search:
        m = _messages.c
        matching = select(m.conversation_id).where(_text_match(bindparam("q", type_=String())))
        if shape.scope == "some":
            matching = matching.where(m.inbox_id.in_(bindparam("scope", expanding=True)))
        if shape.inbox:
            matching = matching.where(m.inbox_id == bindparam("inbox_id"))
        if shape.search == "matches_first":
            # ARRAY(...) is computed once, first; the ids are then looked up by primary key.
            page = page.where(_c.id == any_(func.array(matching.scalar_subquery())))
        else:
            # Uncorrelated, so PostgreSQL runs it once and hashes the ids, or walks the
            # sort order and probes each conversation's messages, whichever is cheaper.
            page = page.where(_c.id.in_(matching))
    if shape.after is not None:
        columns = key.columns(_c)
        bound = [
            INFINITY if infinite else bindparam(f"after_{i}", type_=columns[i].type)
            for i, infinite in enumerate(shape.after)
        ]
        position = tuple_(*columns)
        page = page.where(
            position < tuple_(*bound) if key.descending else position > tuple_(*bound)
        )
    # The contacts are joined to the page once cut: joined before, PostgreSQL looks up the
    # contact of every candidate row of a sorted plan (a thousand, for 51 kept).
    cut = page.order_by(*key.order(_c)).limit(bindparam("limit", type_=Integer)).subquery("page")
    contact = _contacts.c
    listed: list[ColumnElement[Any]] = [cut.c[name] for name in _PAGE_COLUMNS]
    at = _PAGE_COLUMNS.index("contact_id")
    listed[at : at + 1] = [
        contact.id.label("contact_id"),
        contact.email.label("contact_email"),
        contact.name.label("contact_name"),
    ]
    # Each row's tag names come in the same round trip.
    tag_names = (
        select(_tags.c.name)
        .join(_conversation_tags, _conversation_tags.c.tag_id == _tags.c.id)
        .where(_conversation_tags.c.conversation_id == cut.c.id)
        .order_by(func.lower(_tags.c.name))
    )
    listed.append(func.array(tag_names.scalar_subquery()).label("tags"))
    return (
        select(*listed)
        .select_from(cut.outerjoin(_contacts, contact.id == cut.c.contact_id))
        .order_by(*key.order(cut.c))
    )


# How many messages match a search, in any inbox (what reading them first costs): the
# planner's estimate (planned, not run), and a count that stops at the bound.
_ESTIMATE_MATCHES = text(
    "EXPLAIN (FORMAT JSON) SELECT 1 FROM messages "
    "WHERE search_vector @@ websearch_to_tsquery('simple'::regconfig, :q)"
)
_COUNT_MATCHES = select(func.count()).select_from(
    select(_messages.c.id)
    .where(_text_match(bindparam("q", type_=String())))
    .limit(bindparam("bound", type_=Integer))
    .subquery()
)


async def _few_matches(session: AsyncSession, q: str) -> bool:
    """Whether fewer than SEARCH_WALK_MIN_MATCHES messages match `q`."""
    plan = await session.scalar(_ESTIMATE_MATCHES, {"q": q})
    if isinstance(plan, str):  # json, which the dialect decodes; a bare driver would not
        plan = json.loads(plan)
    if plan[0]["Plan"]["Plan Rows"] >= SEARCH_WALK_MIN_MATCHES:
        return False
    # Rare by the statistics. An estimate for several words assumes they are independent
    # (they seldom are: "refund order"), so count, up to the bound; PostgreSQL counts
    # through the GIN index here, since it expects fewer matches than that.
    values = {"q": q, "bound": SEARCH_WALK_MIN_MATCHES}
    count = await session.scalar(_COUNT_MATCHES, values)
    return (count or 0) < SEARCH_WALK_MIN_MATCHES


async def list_conversations(
    session: AsyncSession,
    caller: Caller,
    filters: Filters,
    sort: Sort,
    page: PageParams,
    *,
    now: datetime | None = None,
) -> tuple[Sequence[ListRow], str | None]:
    """A page of the conversations `caller` may see: rows of the page columns, with the
    contact's `contact_email` and `contact_name` after `contact_id`, then `tags`."""
    after = _cursor_values(sort, page.cursor) if page.cursor is not None else None
    scope: Literal["all", "none", "some"] = "all"
    if caller.inbox_ids is not None:
        scope = "some" if caller.inbox_ids else "none"
    assignee: Literal["", "none", "one"] = ""
    if filters.assignee:
        assignee = "none" if filters.assignee == "none" else "one"
    search: Literal["", "matches_first", "walk"] = ""
    if filters.q:
        search = "matches_first" if await _few_matches(session, filters.q) else "walk"
    shape = _Shape(
        sort=sort,
        scope=scope,
        inbox=bool(filters.inbox_id),
        status=bool(filters.status),
        priority=bool(filters.priority),
        assignee=assignee,
        tag=bool(filters.tag),
        contact=bool(filters.contact_id),
        search=search,
        after=None if after is None else tuple(value is None for value in after),
        sla=filters.sla or "",
    )
    values: dict[str, Any] = {  # those of filters the shape has not are ignored
        "limit": page.limit + 1,
        "scope": sorted(caller.inbox_ids or ()),
        "inbox_id": filters.inbox_id,
        "status": list(filters.status),
        "priority": list(filters.priority),
        "assignee_id": caller.user_id if filters.assignee == "me" else filters.assignee,
        "contact_id": filters.contact_id,
        "tag": filters.tag.lower() if filters.tag else None,
        "q": filters.q,
        "now": now,
        **{f"after_{i}": value for i, value in enumerate(after or ())},
    }
    rows = (await session.execute(_statement(shape), values)).all()
    if len(rows) <= page.limit:
        return rows, None
    rows = rows[: page.limit]
    return rows, encode_cursor([sort, *_key_of(rows[-1], sort)])


_TAGS_OF = (
    select(_conversation_tags.c.conversation_id, _tags.c.name)
    .join(_tags, _tags.c.id == _conversation_tags.c.tag_id)
    # One array parameter: the same statement (and prepared plan) for any page size.
    .where(_conversation_tags.c.conversation_id == any_(bindparam("ids", type_=ARRAY(String()))))
    .order_by(func.lower(_tags.c.name))
)


async def tags_of(session: AsyncSession, conversation_ids: list[str]) -> dict[str, list[str]]:
    """Tag names per conversation, for a page of them, in one query."""
    if not conversation_ids:
        return {}
    tags: dict[str, list[str]] = {}
    for conversation_id, name in await session.execute(_TAGS_OF, {"ids": conversation_ids}):
        tags.setdefault(conversation_id, []).append(name)
    return tags
