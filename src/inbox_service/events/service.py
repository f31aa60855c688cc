"""The event feed, read side: a cursor that never skips an event committed late.

Event ids come from a sequence, and a transaction that took id 5 may commit after one
that took id 6: a reader that saw 6 and remembers "after 6" would skip 5 for ever. So the
feed orders by (transaction id, event id) and only hands out events whose transaction is
older than every transaction still running (`xid < pg_snapshot_xmin(pg_current_snapshot())`).
Such transactions are finished, so no event can later appear before the cursor: any
transaction still able to write an event has an xid at or above that horizon, hence above
every event already handed out. The cost is that events wait behind the oldest running
transaction, which is why no transaction here is ever held open across network I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import BigInteger, Text, cast, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from inbox_service.core.auth import Caller
from inbox_service.core.events import Event
from inbox_service.core.pagination import decode_cursor, encode_cursor

_HORIZON = func.pg_snapshot_xmin(func.pg_current_snapshot())
# asyncpg has no xid8 codec: the cursor's xid travels as text and is cast in SQL.
_AFTER = text("(events.xid, events.id) > (CAST(CAST(:after_xid AS text) AS xid8), :after_id)")


@dataclass(frozen=True)
class FeedPage:
    events: list[Event]
    next_cursor: str


async def read_feed(
    session: AsyncSession,
    caller: Caller,
    *,
    after: str | None,
    types: Sequence[str],
    limit: int,
) -> FeedPage:
    """Up to `limit` events after the cursor, oldest first, scoped to the caller's inboxes."""
    xid = cast(cast(Event.xid, Text), BigInteger)
    stmt = select(Event, xid).where(Event.xid < _HORIZON)
    if after is not None:
        after_xid, after_id = decode_cursor(after, [int, int])
        stmt = stmt.where(_AFTER.bindparams(after_xid=str(after_xid), after_id=after_id))
    if types:
        stmt = stmt.where(Event.type.in_(types))
    if not caller.is_admin:
        stmt = stmt.where(Event.inbox_id.is_not(None), caller.scope(Event.inbox_id))
    rows = (await session.execute(stmt.order_by(Event.xid, Event.id).limit(limit))).all()
    events = [event for event, _ in rows]
    if rows:
        last_event, last_xid = rows[-1]
        cursor = encode_cursor([last_xid, last_event.id])
    else:
        cursor = after or encode_cursor([0, 0])
    return FeedPage(events=events, next_cursor=cursor)
