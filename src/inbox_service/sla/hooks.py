"""What other domains tell the SLA clock. Each is called inside the caller's transaction,
with the conversation's row lock held (see `sla.service` for the lock order)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession

from inbox_service.conversations.models import Conversation
from inbox_service.sla import policies, service

# Ingest: ("customer" | "team") message stored on a conversation, at its received time.
MessageSignal = tuple[Conversation, Literal["customer", "team"], datetime]


async def on_agent_reply(
    session: AsyncSession, conversation: Conversation, *, at: datetime, user_id: str | None
) -> None:
    """A reply of ours reached the customer (sent): it meets first/next response targets."""
    await service.agent_replied(session, conversation, at=at, user_id=user_id)


async def on_messages(
    session: AsyncSession, signals: Sequence[MessageSignal], *, now: datetime
) -> None:
    """Ingest stored these human messages (auto-replies and bounces are left out)."""
    await service.customer_and_team_messages(session, signals, now=now)


async def on_status_changed(
    session: AsyncSession,
    conversation: Conversation,
    previous: str,
    *,
    now: datetime,
    actor_id: str | None,
) -> None:
    """After `conversation.status` changed from `previous`: pause, resume, meet or reopen."""
    await service.status_changed(session, conversation, previous, now=now, actor_id=actor_id)


async def on_priority_changed(session: AsyncSession, conversation: Conversation) -> None:
    """After `conversation.priority` changed (by a person or a rule): new targets apply."""
    await service.priority_changed(session, conversation)


async def first_response_estimate(
    session: AsyncSession, conversation: Conversation
) -> timedelta | None:
    """The inbox policy's first-response target at the conversation's priority (business
    time), for "we answer within …" in acknowledgements; None without one."""
    policy = await policies.policy_of_inbox(session, conversation.inbox_id)
    if policy is None:
        return None
    seconds = policies.target_of(policy, conversation.priority, "first_response")
    return timedelta(seconds=seconds) if seconds else None
