from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from inbox_service.core.db import Base, TimestampMixin


class Inbox(TimestampMixin, Base):
    __tablename__ = "inboxes"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    address: Mapped[str] = mapped_column(String(320))
    version: Mapped[int] = mapped_column(Integer, default=1)


class InboxMember(Base):
    __tablename__ = "inbox_members"

    inbox_id: Mapped[str] = mapped_column(
        ForeignKey("inboxes.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    created_at: Mapped[datetime] = mapped_column()
