from __future__ import annotations

from sqlalchemy import Boolean, ForeignKey, Index, Integer, SmallInteger, String, Text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from inbox_service.core.db import Base, TimestampMixin


class PriorityRule(TimestampMixin, Base):
    """Keywords that, found in new mail, set a conversation's priority and add tags."""

    __tablename__ = "priority_rules"
    __table_args__ = (Index("ix_priority_rules_position", "position", "id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    position: Mapped[int] = mapped_column(Integer)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # NULL: every inbox.
    inbox_id: Mapped[str | None] = mapped_column(
        ForeignKey("inboxes.id", ondelete="CASCADE"), index=True
    )
    keywords: Mapped[list[str]] = mapped_column(ARRAY(Text))
    exclusions: Mapped[list[str]] = mapped_column(ARRAY(Text), default=list)
    match_in: Mapped[list[str]] = mapped_column(ARRAY(String(16)))  # subject, body
    sender_domains: Mapped[list[str]] = mapped_column(ARRAY(Text), default=list)
    priority: Mapped[str | None] = mapped_column(String(16))
    tags: Mapped[list[str]] = mapped_column(ARRAY(Text), default=list)
    version: Mapped[int] = mapped_column(Integer, default=1)


class PriorityRulesRevision(Base):
    """One row: a random token replaced by every rule change, in the same transaction.

    Each process caches its compiled matcher under the token it was built from and
    rebuilds when the token differs: one primary-key read per ingest batch tells every
    process, API or worker, that the rules changed. A random token (not a counter) can
    never come back after a rollback, so a stale matcher is never mistaken for current."""

    __tablename__ = "priority_rules_revision"

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    revision: Mapped[str] = mapped_column(String(40))
