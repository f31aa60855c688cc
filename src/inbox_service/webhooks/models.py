"""Webhook endpoints, their deliveries (one row per event and endpoint) and each attempt.

A delivery row is the unit of background work (DESIGN rule 2): it is claimed with a lease
(`locked_until`, `claim_token`), the HTTP attempt runs outside any transaction, and the
result is recorded only by the claim that made it. Delivery ids come from a sequence in
fan-out order, which is event order, so "no earlier pending delivery for the same
endpoint and conversation" is what keeps one conversation's events in order.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Identity,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from inbox_service.core.db import Base, TimestampMixin


class WebhookEndpoint(TimestampMixin, Base):
    __tablename__ = "webhook_endpoints"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    url: Mapped[str] = mapped_column(String(2048))
    description: Mapped[str] = mapped_column(String(500), default="", server_default="")
    # Event types to send, or ["*"] for every type.
    event_types: Mapped[list[str]] = mapped_column(ARRAY(String(64)))
    # Only events of this inbox (None: every inbox, and events of no inbox).
    inbox_id: Mapped[str | None] = mapped_column(ForeignKey("inboxes.id", ondelete="CASCADE"))
    # Fernet-encrypted `whsec_…` secrets; the previous one keeps signing until it expires.
    secret_encrypted: Mapped[str] = mapped_column(Text)
    previous_secret_encrypted: Mapped[str | None] = mapped_column(Text)
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column()
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled_reason: Mapped[str | None] = mapped_column(String(500))
    # Start of the current run of failed attempts (None after a success).
    failing_since: Mapped[datetime | None] = mapped_column()
    version: Mapped[int] = mapped_column(Integer, default=1)


class WebhookDelivery(Base):
    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("endpoint_id", "event_id"),
        # What the sender claims next.
        Index(
            "ix_webhook_deliveries_due",
            "next_attempt_at",
            "id",
            postgresql_where=text("state = 'pending'"),
        ),
        # "Is an earlier delivery of this conversation still pending for this endpoint?"
        Index(
            "ix_webhook_deliveries_order",
            "endpoint_id",
            "conversation_id",
            "id",
            postgresql_where=text("state = 'pending'"),
        ),
        Index("ix_webhook_deliveries_endpoint", "endpoint_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    endpoint_id: Mapped[str] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), index=True)
    event_type: Mapped[str] = mapped_column(String(64))
    conversation_id: Mapped[str | None] = mapped_column(String(40))
    # pending (waiting, or in flight while `locked_until` is ahead) → succeeded | failed.
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(SmallInteger, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column()
    locked_until: Mapped[datetime | None] = mapped_column()
    claim_token: Mapped[str | None] = mapped_column(String(40))
    last_status_code: Mapped[int | None] = mapped_column(SmallInteger)
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column()

    @property
    def public_id(self) -> str:
        return f"dlv_{self.id}"


class WebhookAttempt(Base):
    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    delivery_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), index=True
    )
    attempted_at: Mapped[datetime] = mapped_column()
    status_code: Mapped[int | None] = mapped_column(SmallInteger)
    latency_ms: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(500))
    response_excerpt: Mapped[str] = mapped_column(String(1024), default="")


class WebhookDispatchCursor(Base):
    """Where fan-out has got to in the event log: one row, locked by the dispatcher."""

    __tablename__ = "webhook_dispatch_cursor"

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    # The (xid, id) of the last event considered, as in the event feed's cursor.
    xid: Mapped[int] = mapped_column(BigInteger)
    event_id: Mapped[int] = mapped_column(BigInteger)
