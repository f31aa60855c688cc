"""What happens to a conversation: one activity row and one event, in the caller's transaction.

Every change made through the API or the worker goes through `record`, so the timeline and
the event feed can never disagree (DESIGN rule 1).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession

from inbox_service.conversations.models import Activity, Conversation
from inbox_service.core.events import EventType, emit

ActivityKind = Literal[
    "status_changed",
    "priority_changed",
    "tagged",
    "untagged",
    "assigned",
    "unassigned",
    "rule_matched",
    "sla_warning",
    "sla_breached",
    "snooze_ended",
    "merged",
    "split",
    "csat_received",
]


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
        "snoozed_until": conversation.snoozed_until.isoformat()
        if conversation.snoozed_until
        else None,
        "last_message_at": conversation.last_message_at.isoformat(),
        "waiting_since": conversation.waiting_since.isoformat()
        if conversation.waiting_since
        else None,
        "version": conversation.version,
    }


async def record(
    session: AsyncSession,
    conversation: Conversation,
    kind: ActivityKind,
    *,
    actor_id: str | None,
    now: datetime,
    data: dict[str, Any] | None = None,
    event: EventType | None = None,
) -> Activity:
    """Write the activity and (when given) its event, with the conversation as it is now."""
    activity = Activity(
        conversation_id=conversation.id,
        inbox_id=conversation.inbox_id,
        kind=kind,
        actor_id=actor_id,
        data=data or {},
        created_at=now,
    )
    session.add(activity)
    if event is not None:
        payload = {
            "conversation": conversation_summary(conversation),
            "actor": {"id": actor_id} if actor_id else None,
            **(data or {}),
        }
        await emit(
            session,
            event,
            payload,
            now=now,
            inbox_id=conversation.inbox_id,
            conversation_id=conversation.id,
        )
    else:
        await session.flush()
    return activity
