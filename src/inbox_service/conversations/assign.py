"""Assigning a conversation to a member of its inbox (or to nobody)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from inbox_service.conversations import activity
from inbox_service.conversations.activity import ActivityKind
from inbox_service.conversations.models import Conversation
from inbox_service.core.errors import Invalid
from inbox_service.core.events import EventType
from inbox_service.inboxes.models import InboxMember
from inbox_service.users.models import User


async def assign(
    session: AsyncSession,
    conversation: Conversation,
    assignee_id: str | None,
    *,
    actor_id: str | None,
    now: datetime,
    loc: tuple[str | int, ...] = ("body", "assignee_id"),
    via: str | None = None,
) -> bool:
    """Assign (or unassign with None); only live members of the inbox qualify (422).
    False when nothing changed. `via`: the auto-assignment policy that chose the assignee."""
    if assignee_id is not None:
        member = await session.scalar(
            select(InboxMember.user_id)
            .join(User, User.id == InboxMember.user_id)
            .where(
                InboxMember.inbox_id == conversation.inbox_id,
                InboxMember.user_id == assignee_id,
                User.deleted_at.is_(None),
            )
        )
        if member is None:
            raise Invalid(f"{assignee_id} is not a member of this conversation's inbox", loc=loc)
    previous = conversation.assignee_id
    if previous == assignee_id:
        return False
    conversation.assignee_id = assignee_id
    conversation.version += 1
    conversation.updated_at = now
    kind: ActivityKind = "assigned" if assignee_id else "unassigned"
    event = EventType.CONVERSATION_ASSIGNED if assignee_id else EventType.CONVERSATION_UNASSIGNED
    await activity.record(
        session,
        conversation,
        kind,
        actor_id=actor_id,
        now=now,
        data={"assignee_id": assignee_id, "previous_assignee_id": previous}
        | ({"auto_assignment": via} if via else {}),
        event=event,
    )
    return True
