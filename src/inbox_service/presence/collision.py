"""Collision checks for notes: the same rule, check and 409 answer as for replies.

The caller names the last message they saw (`expected_last_message_id`); anything stored
since (a customer's message, another agent's reply, sent or still pending) is news, and
the write is refused with the replies' `reply-collision` problem listing `unseen_messages`,
so a client handles both the same way. One check for both: `replies.service.unseen_since`.
Call it with the conversation row locked (FOR UPDATE): ingest and replies lock that row
too, so a message is either stored before the check (and reported) or after the write.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from inbox_service.conversations.models import Conversation
from inbox_service.replies import service as replies_service
from inbox_service.replies.errors import ReplyCollision


async def require_seen(
    session: AsyncSession,
    conversation: Conversation,
    expected_last_message_id: str | None,
) -> None:
    """Nothing to do without an expectation; 409 when messages arrived since it, 422 when
    it is not a message of this conversation."""
    if expected_last_message_id is None:
        return
    unseen = await replies_service.unseen_since(session, conversation, expected_last_message_id)
    if unseen:
        raise ReplyCollision(unseen)
