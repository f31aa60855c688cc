from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from inbox_service.core.db import Base


class Presence(Base):
    """Who has a conversation open, and whether they are writing: a heartbeat row that
    counts only until `expires_at`. In PostgreSQL so every API replica sees the same."""

    __tablename__ = "presences"

    conversation_id: Mapped[str] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    inbox_id: Mapped[str] = mapped_column(ForeignKey("inboxes.id", ondelete="CASCADE"))
    state: Mapped[str] = mapped_column(String(16))  # viewing | composing
    since: Mapped[datetime] = mapped_column()  # when this state began
    expires_at: Mapped[datetime] = mapped_column(index=True)
