from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from inbox_service.core.db import Base


class Alert(Base):
    """Something a person should look at: sync failures, SLA warnings and breaches, …"""

    __tablename__ = "alerts"
    __table_args__ = (
        Index(
            "ix_alerts_open",
            "inbox_id",
            "created_at",
            postgresql_where=text("acknowledged_at IS NULL"),
        ),
        # One SLA alert per conversation, metric, cycle and kind: the tick's row locks
        # already ensure it; this makes a duplicate impossible to write at all.
        Index(
            "uq_alerts_sla",
            "conversation_id",
            "kind",
            text("(data ->> 'metric')"),
            text("(data ->> 'cycle')"),
            unique=True,
            postgresql_where=text("kind IN ('sla_warning', 'sla_breached')"),
        ),
        Index("ix_alerts_created_at", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    inbox_id: Mapped[str | None] = mapped_column(ForeignKey("inboxes.id", ondelete="CASCADE"))
    # No foreign key: an alert about a conversation names its inbox too, whose cascade
    # takes it (conversations go only with their inbox); the SLA tick writes them in bulk.
    conversation_id: Mapped[str | None] = mapped_column(String(40))
    message: Mapped[str] = mapped_column(String(500))
    data: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    created_at: Mapped[datetime] = mapped_column()
    acknowledged_at: Mapped[datetime | None] = mapped_column()
    acknowledged_by: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
