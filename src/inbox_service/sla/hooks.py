"""What other domains tell the SLA clock. Each is called inside the caller's transaction.

(A stub until the SLA policies land: the calls are already where they belong.)
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from inbox_service.conversations.models import Conversation


async def on_agent_reply(
    session: AsyncSession, conversation: Conversation, *, at: datetime, user_id: str | None
) -> None:
    """A reply of ours reached the customer (sent): it meets first/next response targets."""
    return None
