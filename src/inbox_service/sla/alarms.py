"""The tick's work on the rows it claimed: announce each due warning and breach once.

Written with Core statements over plain rows, not ORM objects: a tick handles up to a
thousand timers, and loading and flushing that many ORM objects costs ten times the
database work. The state changes go through the same `timers.alarms_due` as everywhere.
Per alarm, in the tick's transaction: the timer marked, an activity (timeline), an event
(feed, stream, webhooks) and an alert; then the conversation's next alarm moves on.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from pydantic_core import to_json
from sqlalchemy import Row, Select, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from inbox_service.conversations.activity import conversation_summary
from inbox_service.conversations.models import Conversation
from inbox_service.core.events import EventType
from inbox_service.core.ids import new_id
from inbox_service.sla import policies, timers
from inbox_service.sla.models import ConversationSla
from inbox_service.sla.timers import Timer

_c = Conversation.__table__.c
_s = ConversationSla.__table__.c

# What an event carries of the conversation (activity.conversation_summary), and the policy.
_CLAIMED = (
    _c.id,
    _c.inbox_id,
    _c.contact_id,
    _c.subject,
    _c.status,
    _c.priority,
    _c.assignee_id,
    _c.message_count,
    _c.snoozed_until,
    _c.last_message_at,
    _c.waiting_since,
    _c.version,
    _c.sla_policy_id,
    _c.merged_into_id,
)

# Where a claimed row's due timer begins: its metric, then a `Timer`'s fields in order.
_TIMER_AT = len(_CLAIMED)

# All the tick's writes in one statement, its values in two JSON documents (one round
# trip; encoding a thousand values per column as driver arrays cost more than the writes):
# the timers that fired are marked and their next alarm moves on (NULL: nothing left to
# announce); each alarm becomes an activity, an event and an alert, in alarm order.
_WRITE = text(
    """
    WITH marked AS (
        UPDATE conversation_slas AS s
           SET warned_at = m.warned_at, breached_at = m.breached_at,
               next_alarm_at = m.next_alarm_at
          FROM jsonb_to_recordset(CAST(:marks AS jsonb))
               AS m(conversation_id text, metric text, warned_at timestamptz,
                    breached_at timestamptz, next_alarm_at timestamptz)
         WHERE s.conversation_id = m.conversation_id AND s.metric = m.metric
    ), fired AS MATERIALIZED (
        SELECT *
          FROM ROWS FROM (
                   jsonb_to_recordset(CAST(:alarms AS jsonb))
                   AS (conversation_id text, inbox_id text, kind text, type text,
                       data jsonb, payload jsonb, alert_id text, message text)
               ) WITH ORDINALITY
               AS f(conversation_id, inbox_id, kind, type, data, payload, alert_id, message, n)
    ), activities_added AS (
        INSERT INTO activities (conversation_id, inbox_id, kind, data, created_at)
        SELECT conversation_id, inbox_id, kind, data, :now FROM fired ORDER BY n
    ), events_added AS (
        INSERT INTO events (type, inbox_id, conversation_id, data, created_at)
        SELECT type, inbox_id, conversation_id, payload, :now FROM fired ORDER BY n
    )
    INSERT INTO alerts (id, kind, inbox_id, conversation_id, message, data, created_at)
    SELECT alert_id, kind, inbox_id, conversation_id, message, data, :now FROM fired ORDER BY n
    """
)


# Per alarm: the activity's and alert's kind, the event's type, and the alert's wording.
_ANNOUNCED: dict[timers.Alarm, tuple[str, str, str]] = {
    "warning": ("sla_warning", EventType.SLA_WARNING.value, "at risk"),
    "breach": ("sla_breached", EventType.SLA_BREACHED.value, "breached"),
}


def claim(now: datetime, limit: int) -> Select[Any]:
    """The due timers (earliest alarms first, through the partial index on
    `next_alarm_at`) with their conversations, both locked FOR NO KEY UPDATE, skipping
    rows another worker holds: one row per due timer.

    Locking the due timers, SKIP LOCKED, makes concurrent ticks take different ones
    instead of all finding the same first rows. The tick never waits for a lock here; a
    transaction holding a conversation (PATCH, ingest, a reply) may wait for the tick to
    commit before it touches that conversation's timers, never the other way round. A
    locked row is read as last committed, so a timer another worker announced meanwhile
    is no longer due, and one a writer changed is seen changed."""
    due = (
        select(_s.conversation_id, _s.metric, *(_s[name] for name in timers.STORED_FIELDS))
        .where(_s.next_alarm_at <= now)
        .order_by(_s.next_alarm_at)
        .limit(limit)
        .with_for_update(skip_locked=True, key_share=True)
        .cte("due")
    )
    return (
        select(*_CLAIMED, *(column for column in due.c if column.key != "conversation_id"))
        .join_from(Conversation.__table__, due, _c.id == due.c.conversation_id)
        .with_for_update(of=Conversation.__table__, skip_locked=True, key_share=True)
    )


async def fire(session: AsyncSession, claimed: Sequence[Row[Any]], *, now: datetime) -> int:
    """Announce the alarms due by `now` of the claimed (locked) timers; the count."""
    if not claimed:
        return 0
    found = await policies.policies_by_id(
        session, {row.sla_policy_id for row in claimed if row.sla_policy_id}
    )
    marks: list[dict[str, Any]] = []
    announced: list[dict[str, Any]] = []
    summaries: dict[str, dict[str, Any]] = {}
    for row in claimed:  # a due timer and its conversation
        timer = Timer(*row[_TIMER_AT:])
        policy = found.get(row.sla_policy_id or "")
        if row.merged_into_id is not None:  # its mail lives on in the target
            policy = None
        # Without a policy (deleted under it, or merged away) nothing is announced:
        # silence the timer.
        fired = timers.alarms_due(timer, now) if policy is not None else []
        if not fired and policy is not None:
            continue
        marks.append(
            {
                "conversation_id": row.id,
                "metric": timer.metric,
                "warned_at": timer.warned_at,
                "breached_at": timer.breached_at,
                "next_alarm_at": timer.next_alarm if policy is not None else None,
            }
        )
        summary = summaries.get(row.id)
        if summary is None:
            summary = summaries[row.id] = conversation_summary(cast("Conversation", row))
        for alarm in fired:
            kind, event_type, what = _ANNOUNCED[alarm]
            details = {
                "metric": timer.metric,
                "cycle": timer.cycle,
                "policy_id": row.sla_policy_id,
                "due_at": timer.due_at.isoformat() if timer.due_at else None,
                "warn_at": timer.warn_at.isoformat() if timer.warn_at else None,
            }
            announced.append(
                {
                    "conversation_id": row.id,
                    "inbox_id": row.inbox_id,
                    "kind": kind,
                    "type": event_type,
                    "data": details,
                    "payload": {"conversation": summary, "actor": None, **details},
                    "alert_id": new_id("alr"),
                    "message": f"SLA {timer.metric.replace('_', ' ')} {what}: {row.subject}"[:500],
                }
            )
    if marks:
        await session.execute(
            _WRITE,
            {"now": now, "marks": to_json(marks).decode(), "alarms": to_json(announced).decode()},
        )
    return len(announced)
