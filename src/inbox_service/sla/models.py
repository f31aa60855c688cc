from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, SmallInteger, String, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from inbox_service.core.db import Base, TimestampMixin


class SlaPolicy(TimestampMixin, Base):
    """Targets per priority and metric, when to warn, and the business calendar."""

    __tablename__ = "sla_policies"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    # {"urgent": {"first_response": 3600, "next_response": null, "resolution": 86400}, …}
    targets: Mapped[dict[str, Any]] = mapped_column(JSONB)
    warn_before_seconds: Mapped[int | None] = mapped_column(Integer)
    warn_before_percent: Mapped[int | None] = mapped_column(SmallInteger)
    # {"timezone": "Europe/Berlin", "intervals": [{"day", "start", "end"}] | null, "holidays"}
    # or null: around the clock in UTC.
    business_hours: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    version: Mapped[int] = mapped_column(Integer, default=1)


class SlaPolicyInbox(Base):
    """Which policy an inbox's conversations follow: at most one per inbox."""

    __tablename__ = "sla_policy_inboxes"

    inbox_id: Mapped[str] = mapped_column(
        ForeignKey("inboxes.id", ondelete="CASCADE"), primary_key=True
    )
    policy_id: Mapped[str] = mapped_column(
        ForeignKey("sla_policies.id", ondelete="CASCADE"), index=True
    )


class ConversationSla(Base):
    """One metric's current cycle on one conversation (see `sla.timers`).

    Written only by a transaction that holds the conversation's row lock, so a reply,
    a status change and the tick never interleave on it. `next_alarm_at` is the timer
    tick's alarm clock, indexed where set: a narrow table, so moving it on is cheap (on
    `conversations` every index would be rewritten)."""

    __tablename__ = "conversation_slas"
    __table_args__ = (
        Index(
            "ix_conversation_slas_next_alarm_at",
            "next_alarm_at",
            postgresql_where=text("next_alarm_at IS NOT NULL"),
        ),
    )

    conversation_id: Mapped[str] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), primary_key=True
    )
    metric: Mapped[str] = mapped_column(String(16), primary_key=True)
    cycle: Mapped[int] = mapped_column(Integer)
    target_seconds: Mapped[int | None] = mapped_column(Integer)
    started_at: Mapped[datetime | None] = mapped_column()
    consumed_seconds: Mapped[int] = mapped_column(Integer, default=0)
    running_since: Mapped[datetime | None] = mapped_column()
    due_at: Mapped[datetime | None] = mapped_column()
    warn_at: Mapped[datetime | None] = mapped_column()
    warned_at: Mapped[datetime | None] = mapped_column()
    breached_at: Mapped[datetime | None] = mapped_column()
    met_at: Mapped[datetime | None] = mapped_column()
    met_by: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    next_alarm_at: Mapped[datetime | None] = mapped_column()
