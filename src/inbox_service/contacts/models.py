from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from inbox_service.core.db import Base, TimestampMixin


class Contact(TimestampMixin, Base):
    """A customer, known by their address (stored lower-cased, unique)."""

    __tablename__ = "contacts"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str | None] = mapped_column(String(200))
    first_seen_at: Mapped[datetime] = mapped_column()
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
