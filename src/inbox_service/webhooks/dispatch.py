"""Fan-out: one delivery row per (event, subscribed endpoint), none missed, none twice.

The dispatcher walks the event log with the feed's commit-safe cursor (events ordered by
(transaction id, id), read only below the horizon of running transactions; see
`events.service`), so an event committed late by a slow transaction is still found. The
cursor lives in one row that the dispatcher locks (SKIP LOCKED: one dispatcher at a time
across workers) and advances in the same transaction that inserts the deliveries, so a
crash either keeps both or neither; the (endpoint, event) unique key makes a repeat
harmless anyway.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Text, cast, func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from inbox_service.core.clock import Clock
from inbox_service.core.db import SessionMaker, transaction
from inbox_service.core.events import Event
from inbox_service.webhooks.models import WebhookDelivery, WebhookDispatchCursor, WebhookEndpoint
from inbox_service.webhooks.service import NOT_SUBSCRIBABLE

BATCH = 1000
_MAX_ID = 2**63 - 1
# asyncpg has no xid8 codec: transaction ids travel as text and are cast in SQL.
_HORIZON = select(cast(cast(func.pg_snapshot_xmin(func.pg_current_snapshot()), Text), BigInteger))
_XID = cast(cast(Event.xid, Text), BigInteger)
_XID8 = "CAST(CAST(:{} AS text) AS xid8)"


def _matches(endpoint: WebhookEndpoint, event_type: str, inbox_id: str | None) -> bool:
    if endpoint.inbox_id is not None and endpoint.inbox_id != inbox_id:
        return False
    return "*" in endpoint.event_types or event_type in endpoint.event_types


async def _lock_cursor(session: AsyncSession) -> WebhookDispatchCursor | None:
    """The cursor row, locked; None while another dispatcher holds it."""
    await session.execute(
        insert(WebhookDispatchCursor).values(id=1, xid=0, event_id=0).on_conflict_do_nothing()
    )
    return await session.scalar(
        select(WebhookDispatchCursor)
        .where(WebhookDispatchCursor.id == 1)
        .with_for_update(skip_locked=True)
    )


async def fan_out(sessionmaker: SessionMaker, clock: Clock, *, batch: int = BATCH) -> int:
    """Create the deliveries of the next events in the log; the number of events read."""
    async with transaction(sessionmaker) as session:
        cursor = await _lock_cursor(session)
        if cursor is None:
            return 0
        horizon = int(await session.scalar(_HORIZON) or 0)
        endpoints = list(
            await session.scalars(select(WebhookEndpoint).where(WebhookEndpoint.enabled))
        )
        rows = (
            await session.execute(
                select(
                    Event.id,
                    _XID.label("xid"),
                    Event.type,
                    Event.inbox_id,
                    Event.conversation_id,
                    Event.created_at,
                )
                .where(
                    text(f"events.xid < {_XID8.format('horizon')}").bindparams(
                        horizon=str(horizon)
                    ),
                    text(
                        f"(events.xid, events.id) > ({_XID8.format('after_xid')}, :after_id)"
                    ).bindparams(after_xid=str(cursor.xid), after_id=cursor.event_id),
                )
                .order_by(Event.xid, Event.id)
                .limit(batch if endpoints else 0)
            )
        ).all()
        deliveries = [
            _delivery(endpoint, row, now=clock.now())
            for row in rows
            if row.type not in NOT_SUBSCRIBABLE
            for endpoint in endpoints
            # An endpoint gets the events that happen after it was created, not history.
            if endpoint.created_at <= row.created_at and _matches(endpoint, row.type, row.inbox_id)
        ]
        if deliveries:
            # executemany: one statement compiled once and cached, every row sent in one
            # pipelined batch (asyncpg); a multi-row .values() was compiled afresh each time.
            await session.execute(
                insert(WebhookDelivery).on_conflict_do_nothing(
                    index_elements=["endpoint_id", "event_id"]
                ),
                deliveries,
            )
        if len(rows) == batch:
            cursor.xid, cursor.event_id = rows[-1].xid, rows[-1].id
        elif (horizon - 1, _MAX_ID) > (cursor.xid, cursor.event_id):
            # Everything below the horizon has been seen: start there next time.
            cursor.xid, cursor.event_id = horizon - 1, _MAX_ID
        return len(rows)


def _delivery(endpoint: WebhookEndpoint, row: Any, *, now: datetime) -> dict[str, Any]:
    return {
        "endpoint_id": endpoint.id,
        "event_id": row.id,
        "event_type": row.type,
        "conversation_id": row.conversation_id,
        "state": "pending",
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
    }
