from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from inbox_service.core.db import Base


class AssignmentCursor(Base):
    """Per inbox: who got the last auto-assigned conversation. Every auto-assigner of the
    inbox locks this row first, so round robin and capacity counts are serialized per inbox
    across worker processes."""

    __tablename__ = "assignment_cursors"

    inbox_id: Mapped[str] = mapped_column(
        ForeignKey("inboxes.id", ondelete="CASCADE"), primary_key=True
    )
    last_user_id: Mapped[str | None] = mapped_column(String(40))
    updated_at: Mapped[datetime | None] = mapped_column()


class AssignmentRequest(Base):
    """A conversation waiting for an owner: new, or reopened while its assignee is away.
    Deleted once assigned (or no longer needing one); postponed while nobody qualifies."""

    __tablename__ = "assignment_requests"
    __table_args__ = (Index("ix_assignment_requests_due", "inbox_id", "next_attempt_at"),)

    conversation_id: Mapped[str] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), primary_key=True
    )
    inbox_id: Mapped[str] = mapped_column(ForeignKey("inboxes.id", ondelete="CASCADE"))
    reason: Mapped[str] = mapped_column(String(16))  # new | reopened
    requested_at: Mapped[datetime] = mapped_column()
    next_attempt_at: Mapped[datetime] = mapped_column()
    attempts: Mapped[int] = mapped_column(Integer, default=0)
