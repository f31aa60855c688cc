from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Integer, String, Text, false
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from inbox_service.core.db import Base, TimestampMixin


class Inbox(TimestampMixin, Base):
    __tablename__ = "inboxes"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    address: Mapped[str] = mapped_column(String(320))
    version: Mapped[int] = mapped_column(Integer, default=1)

    # IMAP: where the mail comes from. Secrets are Fernet-encrypted (INBOX_SECRET_KEY).
    imap_host: Mapped[str | None] = mapped_column(String(255))
    imap_port: Mapped[int | None] = mapped_column(Integer)
    imap_security: Mapped[str] = mapped_column(String(16), default="ssl", server_default="ssl")
    imap_username: Mapped[str | None] = mapped_column(String(320))
    imap_auth: Mapped[str] = mapped_column(
        String(16), default="password", server_default="password"
    )  # or xoauth2
    imap_secret_encrypted: Mapped[str | None] = mapped_column(Text)
    imap_folders: Mapped[list[str]] = mapped_column(
        ARRAY(Text), default=lambda: ["INBOX"], server_default="{INBOX}"
    )
    imap_poll_seconds: Mapped[int] = mapped_column(Integer, default=60, server_default="60")
    imap_enabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Subject fallback threading looks this many days back (0 turns it off).
    subject_threading_days: Mapped[int] = mapped_column(Integer, default=30, server_default="30")
    # Who gets new conversations: off | round_robin | least_loaded (assignment/).
    auto_assignment: Mapped[str] = mapped_column(String(16), default="off", server_default="off")

    # SMTP: where replies go (issue 6). The secret is Fernet-encrypted like IMAP's.
    smtp_host: Mapped[str | None] = mapped_column(String(255))
    smtp_port: Mapped[int | None] = mapped_column(Integer)
    smtp_security: Mapped[str] = mapped_column(String(16), default="ssl", server_default="ssl")
    smtp_username: Mapped[str | None] = mapped_column(String(320))
    smtp_secret_encrypted: Mapped[str | None] = mapped_column(Text)
    # IMAP folder for a copy of each sent reply (None: no copy).
    smtp_sent_folder: Mapped[str | None] = mapped_column(Text)
    # The provider files sent mail itself (Gmail, Microsoft 365): no APPEND, and a send of
    # unknown outcome is reconciled by searching `smtp_sent_folder` for its Message-ID.
    smtp_provider_files_sent: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false()
    )
    undo_send_seconds: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    auto_ack_enabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    auto_ack_template_id: Mapped[str | None] = mapped_column(String(40))
    auto_ack_window_seconds: Mapped[int] = mapped_column(
        Integer, default=86_400, server_default="86400"
    )


class InboxMember(Base):
    __tablename__ = "inbox_members"

    inbox_id: Mapped[str] = mapped_column(
        ForeignKey("inboxes.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    created_at: Mapped[datetime] = mapped_column()
