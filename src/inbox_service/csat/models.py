from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    CheckConstraint,
    ForeignKey,
    Identity,
    Integer,
    SmallInteger,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from inbox_service.core.db import Base


class CsatRating(Base):
    """A customer's score for one resolution cycle of a conversation.

    `cycle` counts the reopenings before the link was issued (0: the first cycle); the
    unique constraint is what makes a link, or any other link of the same cycle, count
    once, even when two submissions race."""

    __tablename__ = "csat_ratings"
    __table_args__ = (
        UniqueConstraint("conversation_id", "cycle"),
        CheckConstraint("score BETWEEN 1 AND 5", name="score_range"),
    )

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    inbox_id: Mapped[str] = mapped_column(ForeignKey("inboxes.id", ondelete="CASCADE"), index=True)
    cycle: Mapped[int] = mapped_column(Integer)
    score: Mapped[int] = mapped_column(SmallInteger)
    comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column()
