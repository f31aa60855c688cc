"""The tick's work on the rows it claimed: announce each due warning and breach once.

Written with Core statements over plain rows, not ORM objects: a tick handles up to a
thousand conversations, and loading and flushing that many ORM objects costs ten times the
database work. The state changes go through the same `timers.alarms_due` as everywhere.
Per alarm, in the tick's transaction: the timer marked, an activity (timeline), an event
(feed, stream, webhooks) and an alert; then the conversation's next alarm moves on.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from pydantic_core import to_json
from sqlalchemy import Row, Select, String, any_, bindparam, func, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from inbox_service.conversations.activity import conversation_summary
from inbox_service.conversations.models import Conversation
from inbox_service.core.events import EventType
from inbox_service.core.ids import new_id
from inbox_service.sla import policies, timers
from inbox_service.sla.models import ConversationSla
from inbox_service.sla.timers import Metric, Timer

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

# One array parameter: the same prepared statement whatever the batch size.
_TIMERS = select(ConversationSla.__table__).where(
    _s.conversation_id == any_(bindparam("ids", type_=ARRAY(String())))
)
# One statement for the whole batch, the new values as parallel arrays: the timers that
# fired are marked and their next alarm moves on (NULL: nothing left to announce).
_MARK = text(
    """
    UPDATE conversation_slas AS s
       SET warned_at = v.warned_at, breached_at = v.breached_at, next_alarm_at = v.next_at
      FROM unnest(CAST(:cids AS text[]), CAST(:metrics AS text[]),
                  CAST(:warned AS timestamptz[]), CAST(:breached AS timestamptz[]),
                  CAST(:next_at AS timestamptz[]))
           AS v(cid, metric, warned_at, breached_at, next_at)
     WHERE s.conversation_id = v.cid AND s.metric = v.metric
    """
)


# The announcements, one statement per table for the batch; JSON is encoded here once
# (pydantic-core), not per value by the driver's type processing.
_ADD_ACTIVITIES = text(
    """
    INSERT INTO activities (conversation_id, inbox_id, kind, data, created_at)
    SELECT v.cid, v.inbox_id, v.kind, v.data, :now
      FROM unnest(CAST(:cids AS text[]), CAST(:inbox_ids AS text[]), CAST(:kinds AS text[]),
                  CAST(:data AS jsonb[])) AS v(cid, inbox_id, kind, data)
    """
)
_ADD_EVENTS = text(
    """
    INSERT INTO events (type, inbox_id, conversation_id, data, created_at)
    SELECT v.type, v.inbox_id, v.cid, v.data, :now
      FROM unnest(CAST(:types AS text[]), CAST(:inbox_ids AS text[]), CAST(:cids AS text[]),
                  CAST(:payloads AS jsonb[])) AS v(type, inbox_id, cid, data)
    """
)
_ADD_ALERTS = text(
    """
    INSERT INTO alerts (id, kind, inbox_id, conversation_id, message, data, created_at)
    SELECT v.id, v.kind, v.inbox_id, v.cid, v.message, v.data, :now
      FROM unnest(CAST(:alert_ids AS text[]), CAST(:kinds AS text[]),
                  CAST(:inbox_ids AS text[]), CAST(:cids AS text[]),
                  CAST(:messages AS text[]), CAST(:data AS jsonb[]))
           AS v(id, kind, inbox_id, cid, message, data)
    """
)


def claim(now: datetime, limit: int) -> Select[Any]:
    """Conversations with a due timer (earliest alarms first, through the partial index on
    `next_alarm_at`), locked FOR NO KEY UPDATE, skipping rows another worker holds.

    The due timers are locked too, SKIP LOCKED, so concurrent ticks take different ones
    instead of all finding the same first rows. The tick never waits for a lock here; a
    transaction holding a conversation (PATCH, ingest, a reply) may wait for the tick to
    commit before it touches that conversation's timers, never the other way round. The
    timers are read again after the claim (a new snapshot, under the locks), so one
    another worker announced meanwhile shows as announced."""
    due = (
        select(_s.conversation_id)
        .where(_s.next_alarm_at <= now)
        .order_by(_s.next_alarm_at)
        .limit(limit)
        .with_for_update(skip_locked=True, key_share=True)
    )
    return (
        select(*_CLAIMED)
        # ARRAY(...) runs once, first; the conversations are then found by primary key
        # (never a scan of the table, however the planner weighs a small one).
        .where(_c.id == any_(func.array(due.scalar_subquery())))
        .with_for_update(skip_locked=True, key_share=True)
    )


def _timer(row: Row[Any]) -> Timer:
    timer = Timer(metric=cast("Metric", row.metric))
    for name in timers.STORED_FIELDS:
        setattr(timer, name, getattr(row, name))
    return timer


async def fire(session: AsyncSession, claimed: Sequence[Row[Any]], *, now: datetime) -> int:
    """Announce what is due by `now` on the claimed (locked) conversations; the count."""
    if not claimed:
        return 0
    ids = [row.id for row in claimed]
    by_conversation: dict[str, list[Timer]] = {}
    for row in await session.execute(_TIMERS, {"ids": ids}):
        by_conversation.setdefault(row.conversation_id, []).append(_timer(row))
    found = await policies.policies_by_id(
        session, {row.sla_policy_id for row in claimed if row.sla_policy_id}
    )
    # Column arrays of the announcements: one value per alarm in each.
    cids: list[str] = []
    inbox_ids: list[str] = []
    kinds: list[str] = []
    types: list[str] = []
    data: list[str] = []
    payloads: list[str] = []
    messages: list[str] = []
    marks: dict[str, list[Any]] = {
        "cids": [],
        "metrics": [],
        "warned": [],
        "breached": [],
        "next_at": [],
    }
    for conversation in claimed:
        policy = found.get(conversation.sla_policy_id or "")
        if conversation.merged_into_id is not None:  # its mail lives on in the target
            policy = None
        summary: dict[str, Any] | None = None
        for timer in by_conversation.get(conversation.id, []):
            # Without a policy (deleted under it, or merged away) nothing is announced:
            # silence the timer.
            fired = timers.alarms_due(timer, now) if policy is not None else []
            if not fired and policy is not None:
                continue
            marks["cids"].append(conversation.id)
            marks["metrics"].append(timer.metric)
            marks["warned"].append(timer.warned_at)
            marks["breached"].append(timer.breached_at)
            marks["next_at"].append(timer.next_alarm if policy is not None else None)
            summary = summary or conversation_summary(cast("Conversation", conversation))
            for alarm in fired:
                kind = "sla_warning" if alarm == "warning" else "sla_breached"
                details = {
                    "metric": timer.metric,
                    "cycle": timer.cycle,
                    "policy_id": conversation.sla_policy_id,
                    "due_at": timer.due_at.isoformat() if timer.due_at else None,
                    "warn_at": timer.warn_at.isoformat() if timer.warn_at else None,
                }
                what = "breached" if alarm == "breach" else "at risk"
                cids.append(conversation.id)
                inbox_ids.append(conversation.inbox_id)
                kinds.append(kind)
                types.append(
                    (EventType.SLA_WARNING if alarm == "warning" else EventType.SLA_BREACHED).value
                )
                data.append(to_json(details).decode())
                payloads.append(
                    to_json({"conversation": summary, "actor": None, **details}).decode()
                )
                messages.append(
                    f"SLA {timer.metric.replace('_', ' ')} {what}: {conversation.subject}"[:500]
                )
    if marks["cids"]:
        await session.execute(_MARK, marks)
    if cids:
        where = {"now": now, "cids": cids, "inbox_ids": inbox_ids}
        await session.execute(_ADD_ACTIVITIES, {**where, "kinds": kinds, "data": data})
        await session.execute(_ADD_EVENTS, {**where, "types": types, "payloads": payloads})
        alert_ids = [new_id("alr") for _ in cids]
        await session.execute(
            _ADD_ALERTS,
            {**where, "alert_ids": alert_ids, "kinds": kinds, "messages": messages, "data": data},
        )
    return len(cids)
