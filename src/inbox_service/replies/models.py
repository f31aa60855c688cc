from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, LargeBinary, String, Text, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from inbox_service.core.db import Base


class Reply(Base):
    """One outgoing mail: the outbox row. States and invariants: `replies/sender.py`."""

    __tablename__ = "replies"
    __table_args__ = (
        # What the sender claims next: due rows only, in due order.
        Index(
            "ix_replies_due",
            "next_attempt_at",
            "id",
            postgresql_where=text("status IN ('scheduled', 'queued')"),
        ),
        # Expired leases (a worker died while sending) and unknown outcomes to reconcile.
        Index(
            "ix_replies_in_doubt",
            "locked_until",
            postgresql_where=text("status IN ('sending', 'unknown')"),
        ),
        Index("ix_replies_conversation_id", "conversation_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    inbox_id: Mapped[str] = mapped_column(ForeignKey("inboxes.id", ondelete="CASCADE"))
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    author_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    kind: Mapped[str] = mapped_column(String(16))  # reply | auto_ack
    status: Mapped[str] = mapped_column(String(16))
    # The id of the conversation message this reply becomes when sent (known from the start,
    # so a client can name it as `expected_last_message_id` of its next reply).
    message_row_id: Mapped[str] = mapped_column(String(40), unique=True)
    message_id: Mapped[str] = mapped_column(Text)  # RFC 5322 Message-ID, without <>
    in_reply_to: Mapped[list[str]] = mapped_column(ARRAY(Text), default=list)
    references: Mapped[list[str]] = mapped_column(ARRAY(Text), default=list)
    subject: Mapped[str] = mapped_column(Text)
    from_name: Mapped[str | None] = mapped_column(Text)
    from_address: Mapped[str] = mapped_column(String(320))
    to: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    cc: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list)
    text_body: Mapped[str] = mapped_column(Text)
    html_body: Mapped[str | None] = mapped_column(Text)
    template_id: Mapped[str | None] = mapped_column(String(40))
    mime: Mapped[bytes] = mapped_column(LargeBinary)  # built once; every attempt sends these bytes
    send_at: Mapped[datetime] = mapped_column()
    next_attempt_at: Mapped[datetime | None] = mapped_column()
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    locked_by: Mapped[str | None] = mapped_column(String(128))
    locked_until: Mapped[datetime | None] = mapped_column()
    # Set (and committed) just before DATA: from here on a lost connection is `unknown`.
    data_started_at: Mapped[datetime | None] = mapped_column()
    smtp_response: Mapped[str | None] = mapped_column(Text)
    last_error: Mapped[str | None] = mapped_column(Text)
    reconcile_attempts: Mapped[int] = mapped_column(Integer, default=0)
    # none | appended | skipped | failed: the copy in the inbox's Sent folder
    sent_copy: Mapped[str] = mapped_column(String(16), default="none")
    created_at: Mapped[datetime] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column()
    sent_at: Mapped[datetime | None] = mapped_column()
    cancelled_at: Mapped[datetime | None] = mapped_column()


class AutoAckSent(Base):
    """When each sender last got an auto-acknowledgement from an inbox (the RFC 3834 limit)."""

    __tablename__ = "auto_ack_senders"

    inbox_id: Mapped[str] = mapped_column(
        ForeignKey("inboxes.id", ondelete="CASCADE"), primary_key=True
    )
    address: Mapped[str] = mapped_column(String(320), primary_key=True)
    last_sent_at: Mapped[datetime] = mapped_column()


class Signature(Base):
    """An agent's signature, appended to the replies they write (not to auto-acks)."""

    __tablename__ = "reply_signatures"

    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    text: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column()
