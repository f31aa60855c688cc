"""The event feed, read side: a cursor that never skips an event committed late.

Event ids come from a sequence, and a transaction that took id 5 may commit after one
that took id 6: a reader that saw 6 and remembers "after 6" would skip 5 for ever. So the
feed orders by (transaction id, event id) and only hands out events whose transaction is
older than every transaction still running (`xid < pg_snapshot_xmin(pg_current_snapshot())`).
Such transactions are finished, so no event can later appear before the cursor: any
transaction still able to write an event has an xid at or above that horizon, hence above
every event already handed out. The cost is that events wait behind the oldest running
transaction, which is why no transaction here is ever held open across network I/O.

The live stream reads the same pages. Each event's own cursor, `(xid, id)` of that event,
is its SSE `id:`, so `Last-Event-ID` resumes right after it: every event before it had
finished committing when it was handed out, and every event after it is still ahead. A new
stream starts at `current_cursor()`, just below the horizon, so it gets what commits from
then on (and late commits of transactions already running), never history.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import BigInteger, Text, cast, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from inbox_service.core.auth import Caller
from inbox_service.core.errors import Invalid
from inbox_service.core.events import Event
from inbox_service.core.pagination import decode_cursor, encode_cursor

# asyncpg has no xid8 codec: transaction ids travel as text and are cast in SQL.
_HORIZON = select(cast(cast(func.pg_snapshot_xmin(func.pg_current_snapshot()), Text), BigInteger))
_BELOW_HORIZON = text("events.xid < CAST(CAST(:horizon AS text) AS xid8)")
_AFTER = text("(events.xid, events.id) > (CAST(CAST(:after_xid AS text) AS xid8), :after_id)")
# Both halves of a cursor are non-negative 63-bit numbers (xid8 values in use and bigint ids);
# anything else was not handed out here and must not reach the database as a 500.
_MAX_KEY = 2**63 - 1


@dataclass(frozen=True)
class FeedPage:
    events: list[Event]
    next_cursor: str
    # cursors[i] resumes just after events[i]: the live stream's `id:` lines.
    cursors: list[str] = field(default_factory=list)


def _decode_after(after: str, loc: Sequence[str] = ("query", "after")) -> tuple[int, int]:
    """The (xid, id) of a cursor; a 422 naming `loc` for anything else."""
    problem = Invalid(f"`{loc[-1]}` is not a cursor this feed returned", loc=list(loc))
    try:
        xid, event_id = decode_cursor(after, [int, int])
    except Invalid:
        raise problem from None
    if not (0 <= xid <= _MAX_KEY and 0 <= event_id <= _MAX_KEY):
        raise problem
    return xid, event_id


def check_cursor(cursor: str, loc: Sequence[str]) -> str:
    """`cursor` itself when it is one this feed (or the stream) handed out; else a 422 at `loc`."""
    _decode_after(cursor, loc)
    return cursor


def _horizon_cursor(horizon: int) -> str:
    """Just before the first transaction that may still be running: everything older is done."""
    return encode_cursor([max(horizon - 1, 0), _MAX_KEY])


async def current_cursor(session: AsyncSession) -> str:
    """A cursor at "now": after it come only events of transactions still running or not yet
    begun, none of the history already committed."""
    return _horizon_cursor(int(await session.scalar(_HORIZON) or 0))


async def read_feed(
    session: AsyncSession,
    caller: Caller,
    *,
    after: str | None,
    types: Sequence[str],
    limit: int,
) -> FeedPage:
    """Up to `limit` events after the cursor, oldest first, scoped to the caller's inboxes."""
    # Read first, then used as a bound: every transaction below it had finished by then, so
    # all of their events are visible to the next statement, whatever commits in between.
    horizon = int(await session.scalar(_HORIZON) or 0)
    # Labelled: an anonymous expression beside the entity is not found again in the row.
    xid = cast(cast(Event.xid, Text), BigInteger).label("xid_number")
    stmt = select(Event, xid).where(_BELOW_HORIZON.bindparams(horizon=str(horizon)))
    if after is not None:
        after_xid, after_id = _decode_after(after)
        stmt = stmt.where(_AFTER.bindparams(after_xid=str(after_xid), after_id=after_id))
    if types:
        stmt = stmt.where(Event.type.in_(types))
    if not caller.is_admin:
        stmt = stmt.where(Event.inbox_id.is_not(None), caller.scope(Event.inbox_id))
    rows = (await session.execute(stmt.order_by(Event.xid, Event.id).limit(limit))).all()
    events = [event for event, _ in rows]
    cursors = [encode_cursor([event_xid, event.id]) for event, event_xid in rows]
    if len(rows) == limit:
        cursor = cursors[-1]
    else:
        # Everything below the horizon has been considered, filtered out or returned: the
        # next poll can start there instead of rescanning what the filters skipped.
        cursor = _horizon_cursor(horizon)
        if after is not None and _decode_after(after) > (horizon - 1, _MAX_KEY):
            cursor = after
    return FeedPage(events=events, next_cursor=cursor, cursors=cursors)
