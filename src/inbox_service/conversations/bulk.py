"""Bulk actions for scripts: validated for every id first, then applied in one transaction."""

from __future__ import annotations

import contextlib
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from inbox_service.conversations import assign, service, tags
from inbox_service.conversations.models import Conversation
from inbox_service.conversations.schemas import BulkIn, BulkResult, ConversationPatch
from inbox_service.core.auth import Caller
from inbox_service.core.errors import Invalid, NotFound

_STATUSES = {"open", "pending", "resolved"}
_PRIORITIES = {"urgent", "high", "normal", "low"}


async def run(
    session: AsyncSession, caller: Caller, body: BulkIn, *, now: datetime
) -> list[BulkResult]:
    """Apply the action to every conversation or to none (any error rolls all back)."""
    ids = list(dict.fromkeys(body.ids))
    found = {
        c.id: c
        for c in await session.scalars(
            select(Conversation)
            .where(Conversation.id.in_(ids), caller.scope(Conversation.inbox_id))
            .order_by(Conversation.id)
            .with_for_update()
        )
    }
    missing = [i for i in ids if i not in found]
    if missing:
        raise NotFound(f"no conversations {', '.join(missing)}")
    if body.action == "status" and body.value not in _STATUSES:
        raise Invalid(
            "value must be open, pending or resolved (snooze one at a time)", loc=["body", "value"]
        )
    if body.action == "priority" and body.value not in _PRIORITIES:
        raise Invalid("value must be urgent, high, normal or low", loc=["body", "value"])
    if body.action in ("tag", "untag") and not body.value:
        raise Invalid("value must be a tag name", loc=["body", "value"])
    results = []
    for conversation_id in ids:
        conversation = found[conversation_id]
        version = conversation.version
        if body.action == "assign":
            await assign.assign(
                session,
                conversation,
                body.value,
                actor_id=caller.user_id,
                now=now,
                loc=("body", "value"),
            )
        elif body.action in ("status", "priority"):
            patch = ConversationPatch.model_validate({body.action: body.value})
            await service.update_conversation(
                session, conversation, patch, actor_id=caller.user_id, now=now
            )
        elif body.action == "tag":
            await tags.tag_conversation(
                session, conversation, body.value or "", actor_id=caller.user_id, now=now
            )
        else:
            # untagging what has no such tag changes nothing
            with contextlib.suppress(NotFound):
                await tags.untag_conversation(
                    session, conversation, body.value or "", actor_id=caller.user_id, now=now
                )
        results.append(BulkResult(id=conversation_id, changed=conversation.version != version))
    return results
