"""Worker jobs of the conversations domain: waking snoozed conversations."""

from __future__ import annotations

from sqlalchemy import select

from inbox_service.alerts.service import raise_alert
from inbox_service.assignment import service as assignment_service
from inbox_service.conversations import activity
from inbox_service.conversations.models import Conversation
from inbox_service.core.clock import Clock
from inbox_service.core.db import SessionMaker, transaction
from inbox_service.core.events import EventType
from inbox_service.core.jobs import Job
from inbox_service.sla import hooks as sla_hooks

WAKE_BATCH = 100


async def wake_snoozed(sessionmaker: SessionMaker, clock: Clock) -> int:
    """Reopen conversations whose snooze has ended: once each, however many workers run.

    The rows are claimed with FOR UPDATE SKIP LOCKED and changed (status, activity, event,
    alert) in one transaction: a second worker skips rows being woken and, after the
    commit, no longer finds them snoozed.
    """
    now = clock.now()
    async with transaction(sessionmaker) as session:
        due = list(
            await session.scalars(
                select(Conversation)
                .where(Conversation.status == "snoozed", Conversation.snoozed_until <= now)
                .order_by(Conversation.snoozed_until)
                .limit(WAKE_BATCH)
                .with_for_update(skip_locked=True)
            )
        )
        for conversation in due:
            until = conversation.snoozed_until
            conversation.status = "open"
            conversation.snoozed_until = None
            conversation.version += 1
            conversation.updated_at = now
            await activity.record(
                session,
                conversation,
                "snooze_ended",
                actor_id=None,
                now=now,
                data={
                    "previous_status": "snoozed",
                    "status": "open",
                    "snoozed_until": until.isoformat() if until else None,
                },
                event=EventType.CONVERSATION_STATUS_CHANGED,
            )
            # The SLA clocks resume with what was left of their budgets.
            await sla_hooks.on_status_changed(
                session, conversation, "snoozed", now=now, actor_id=None
            )
            await raise_alert(
                session,
                "snooze_ended",
                f"Snooze ended: {conversation.subject}"[:500],
                now=now,
                inbox_id=conversation.inbox_id,
                conversation_id=conversation.id,
            )
        # Woken while its assignee is away: auto-assignment finds it a present owner.
        await assignment_service.request_assignment(
            session, [c.id for c in due], reason="reopened", now=now
        )
    return len(due)


JOBS = [Job(name="conversations.wake_snoozed", run_once=wake_snoozed)]
