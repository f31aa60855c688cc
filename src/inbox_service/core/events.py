"""The event log, write side: `emit()` adds an event inside the caller's transaction.

A state change and the event describing it commit together or not at all (DESIGN rule 1);
webhook delivery, the SSE stream and `GET /v1/events` all read these rows afterwards.
Each row records the id of the transaction that wrote it (`xid`, via
`pg_current_xact_id()`), which the feed uses to never skip an event committed late.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Identity, Index, String, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql.base import ischema_names
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.types import UserDefinedType

from inbox_service.core.db import Base


class EventType(enum.StrEnum):
    CONVERSATION_CREATED = "conversation.created"
    MESSAGE_RECEIVED = "message.received"
    CONVERSATION_ASSIGNED = "conversation.assigned"
    CONVERSATION_UNASSIGNED = "conversation.unassigned"
    CONVERSATION_STATUS_CHANGED = "conversation.status_changed"
    CONVERSATION_PRIORITY_CHANGED = "conversation.priority_changed"
    CONVERSATION_TAGGED = "conversation.tagged"
    CONVERSATION_MERGED = "conversation.merged"
    CONVERSATION_SPLIT = "conversation.split"
    NOTE_CREATED = "note.created"
    REPLY_SENT = "reply.sent"
    REPLY_FAILED = "reply.failed"
    PRESENCE_CHANGED = "presence.changed"
    SLA_WARNING = "sla.warning"
    SLA_BREACHED = "sla.breached"
    CSAT_RECEIVED = "csat.received"
    INBOX_SYNC_FAILED = "inbox.sync_failed"
    WEBHOOK_TEST = "webhook.test"
    INBOX_CREATED = "inbox.created"
    INBOX_UPDATED = "inbox.updated"
    INBOX_DELETED = "inbox.deleted"
    INBOX_MEMBER_ADDED = "inbox.member_added"
    INBOX_MEMBER_REMOVED = "inbox.member_removed"


class XID8(UserDefinedType[int]):
    """PostgreSQL's 64-bit transaction id type."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "xid8"


# Reflection (alembic autogenerate) looks type names up here; unknown, `xid8` would reflect
# as NullType with a warning, and autogenerate would never compare the column's type.
ischema_names.setdefault("xid8", XID8)


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (Index("ix_events_xid_id", "xid", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    xid: Mapped[int] = mapped_column(
        XID8(), server_default=text("pg_current_xact_id()"), nullable=False
    )
    type: Mapped[str] = mapped_column(String(64))
    inbox_id: Mapped[str | None] = mapped_column(String(40), index=True)
    conversation_id: Mapped[str | None] = mapped_column(String(40))
    data: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column()

    @property
    def public_id(self) -> str:
        return f"evt_{self.id}"


def new_event(
    event_type: EventType,
    data: dict[str, Any],
    *,
    now: datetime,
    inbox_id: str | None = None,
    conversation_id: str | None = None,
) -> Event:
    """An event row to add to the session (for writers that add many at once)."""
    return Event(
        type=event_type.value,
        inbox_id=inbox_id,
        conversation_id=conversation_id,
        data=data,
        created_at=now,
    )


async def emit(
    session: AsyncSession,
    event_type: EventType,
    data: dict[str, Any],
    *,
    now: datetime,
    inbox_id: str | None = None,
    conversation_id: str | None = None,
) -> Event:
    """Record an event in the caller's transaction; it becomes visible when that commits."""
    event = new_event(event_type, data, now=now, inbox_id=inbox_id, conversation_id=conversation_id)
    session.add(event)
    await session.flush()
    return event
