from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Computed,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, TSVECTOR
from sqlalchemy.orm import Mapped, mapped_column

from inbox_service.core.db import Base, TimestampMixin


class Conversation(TimestampMixin, Base):
    __tablename__ = "conversations"
    __table_args__ = (
        # Subject fallback threading: same contact, same base subject, recent first.
        Index(
            "ix_conversations_subject_lookup",
            "inbox_id",
            "contact_id",
            "base_subject",
            "last_message_at",
        ),
        Index("ix_conversations_inbox_id_last_message_at", "inbox_id", "last_message_at", "id"),
        Index("ix_conversations_last_message_at", "last_message_at", "id"),
        Index(
            "ix_conversations_waiting",
            "inbox_id",
            text("coalesce(waiting_since, 'infinity')"),
            "id",
        ),
        Index(
            "ix_conversations_priority",
            "inbox_id",
            "priority_rank",
            text("coalesce(waiting_since, 'infinity')"),
            "id",
        ),
        # The same sorts across inboxes (admins, agents of several inboxes), by status.
        Index(
            "ix_conversations_status_waiting",
            "status",
            text("coalesce(waiting_since, 'infinity')"),
            "id",
        ),
        Index(
            "ix_conversations_status_priority",
            "status",
            "priority_rank",
            text("coalesce(waiting_since, 'infinity')"),
            "id",
        ),
        # The snooze alarm clock: only snoozed rows, ordered by when they wake.
        Index(
            "ix_conversations_snoozed_until",
            "snoozed_until",
            postgresql_where=text("status = 'snoozed'"),
        ),
        Index("ix_conversations_assignee_id", "assignee_id", "last_message_at"),
        # The busiest list views: "open and unassigned, longest waiting" and one status by
        # recency, per inbox or per assignee.
        Index(
            "ix_conversations_unassigned_waiting",
            "inbox_id",
            text("coalesce(waiting_since, 'infinity')"),
            "id",
            postgresql_where=text("status = 'open' AND assignee_id IS NULL"),
        ),
        Index(
            "ix_conversations_inbox_status_last_message_at",
            "inbox_id",
            "status",
            "last_message_at",
            "id",
        ),
        Index(
            "ix_conversations_assignee_status_last_message_at",
            "assignee_id",
            "status",
            "last_message_at",
            "id",
        ),
        # SLA: the `sla_due` sort per inbox and per status (also `sla=breached` with it), and
        # the conversations whose warning time passed (`sla=at_risk`, `sla=breached`).
        Index(
            "ix_conversations_sla_due",
            "inbox_id",
            text("coalesce(sla_due_at, 'infinity')"),
            "id",
        ),
        Index(
            "ix_conversations_status_sla_due",
            "status",
            text("coalesce(sla_due_at, 'infinity')"),
            "id",
        ),
        Index(
            "ix_conversations_sla_warn_at",
            "sla_warn_at",
            "sla_due_at",
            "id",
            postgresql_where=text("sla_warn_at IS NOT NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    inbox_id: Mapped[str] = mapped_column(ForeignKey("inboxes.id", ondelete="CASCADE"))
    contact_id: Mapped[str | None] = mapped_column(ForeignKey("contacts.id"), index=True)
    subject: Mapped[str] = mapped_column(Text, default="")
    base_subject: Mapped[str] = mapped_column(Text, default="")
    # Unguessable; carried in our outbound Message-IDs so replies find their way back.
    thread_token: Mapped[str] = mapped_column(String(32), unique=True)
    status: Mapped[str] = mapped_column(String(16), default="open")
    priority: Mapped[str] = mapped_column(String(16), default="normal")
    # urgent 0, high 1, normal 2, low 3: what the `priority` sort orders by.
    priority_rank: Mapped[int] = mapped_column(
        SmallInteger,
        Computed(
            "CASE priority WHEN 'urgent' THEN 0 WHEN 'high' THEN 1 WHEN 'normal' THEN 2 ELSE 3 END",
            persisted=True,  # PostgreSQL 18 makes generated columns virtual by default
        ),
    )
    assignee_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    snoozed_until: Mapped[datetime | None] = mapped_column()
    message_count: Mapped[int] = mapped_column(Integer, default=0)
    snippet: Mapped[str] = mapped_column(Text, default="")
    last_message_at: Mapped[datetime] = mapped_column()
    # The oldest customer message we have not answered yet; NULL when nothing waits on us.
    waiting_since: Mapped[datetime | None] = mapped_column()
    version: Mapped[int] = mapped_column(Integer, default=1)
    # Our first reply that reached the customer, and how many did (auto-acks excluded).
    first_response_at: Mapped[datetime | None] = mapped_column()
    reply_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Set when merged into another conversation: lists skip it; mail for it goes there.
    merged_into_id: Mapped[str | None] = mapped_column(
        ForeignKey("conversations.id", ondelete="SET NULL")
    )
    # Who set the priority (rules/): {"type": "rule" | "user", "rule_id", "keyword",
    # "user_id"}; NULL: nobody. A person's choice is never overridden by a rule.
    priority_source: Mapped[dict[str, Any] | None] = mapped_column(JSONB(none_as_null=True))
    # SLA (sla/): the policy its clocks follow, and the earliest due and warning times of
    # its running metrics (list filters and the `sla_due` sort); NULL without running clocks.
    sla_policy_id: Mapped[str | None] = mapped_column(
        ForeignKey("sla_policies.id", ondelete="SET NULL")
    )
    sla_due_at: Mapped[datetime | None] = mapped_column()
    sla_warn_at: Mapped[datetime | None] = mapped_column()
    # Reports (reports/) and CSAT cycles (csat/): the latest resolution and how often it was
    # reopened. Kept by the `conversations_status_facts` trigger (migration 3c0f6e1d9a27),
    # stamped with the row's `updated_at`, so every path that changes a status counts (API,
    # bulk, merge, snooze wake-up, the customer's reply reopening it). Read them with a
    # query: an instance in memory does not see what the trigger wrote.
    resolved_at: Mapped[datetime | None] = mapped_column()
    reopen_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        # Exactly-once ingest: one row per inbox per Message-ID (or content hash).
        UniqueConstraint("inbox_id", "dedupe_key"),
        Index("ix_messages_conversation_id_received_at", "conversation_id", "received_at"),
        Index("ix_messages_inbox_id_message_id", "inbox_id", "message_id"),
        # Replies that arrived before their parent are found by the ids they point at.
        Index("ix_messages_parent_ids", "parent_ids", postgresql_using="gin"),
        Index("ix_messages_search", "search_vector", postgresql_using="gin"),
        Index(
            "ix_messages_quarantine",
            "inbox_id",
            "received_at",
            postgresql_where=text("conversation_id IS NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    inbox_id: Mapped[str] = mapped_column(ForeignKey("inboxes.id", ondelete="CASCADE"))
    conversation_id: Mapped[str | None] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE")
    )
    direction: Mapped[str] = mapped_column(String(16))  # inbound | outbound
    dedupe_key: Mapped[str] = mapped_column(Text)
    message_id: Mapped[str | None] = mapped_column(Text)
    in_reply_to: Mapped[list[str]] = mapped_column(ARRAY(Text), default=list)
    references: Mapped[list[str]] = mapped_column(ARRAY(Text), default=list)
    parent_ids: Mapped[list[str]] = mapped_column(ARRAY(Text), default=list)
    thread_index_guid: Mapped[bytes | None] = mapped_column(LargeBinary)
    subject: Mapped[str] = mapped_column(Text, default="")
    from_name: Mapped[str | None] = mapped_column(Text)
    from_address: Mapped[str | None] = mapped_column(String(320))
    to: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list)
    cc: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list)
    reply_to: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list)
    sent_at: Mapped[datetime | None] = mapped_column()
    # When it happened (the Date header, unless absent or in the future); orders a thread.
    received_at: Mapped[datetime] = mapped_column()
    created_at: Mapped[datetime] = mapped_column()  # when we stored it
    text_body: Mapped[str | None] = mapped_column(Text)
    html_body: Mapped[str | None] = mapped_column(Text)
    snippet: Mapped[str] = mapped_column(Text, default="")
    threaded_by: Mapped[str] = mapped_column(String(16))
    auto_kind: Mapped[str | None] = mapped_column(String(16))
    parse_status: Mapped[str] = mapped_column(String(16))
    parse_error: Mapped[str | None] = mapped_column(Text)
    size: Mapped[int] = mapped_column(Integer)
    raw_sha256: Mapped[str] = mapped_column(String(64))
    # Full-text search over subject, addresses and body; 'simple' because an inbox gets
    # mail in many languages (no stemming, no stop words: every word is findable).
    search_vector: Mapped[str] = mapped_column(
        TSVECTOR,
        Computed(
            "to_tsvector('simple'::regconfig, coalesce(subject, '') || ' ' || "
            "coalesce(from_name, '') || ' ' || coalesce(from_address, '') || ' ' || "
            "\"to\"::text || ' ' || cc::text || ' ' || left(coalesce(text_body, ''), 100000))",
            persisted=True,
        ),
        deferred=True,
    )


class MessageRaw(Base):
    """The bytes as received: everything else can be rebuilt from them."""

    __tablename__ = "message_raws"

    message_id: Mapped[str] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True
    )
    raw: Mapped[bytes] = mapped_column(LargeBinary)


class MessageLocation(Base):
    """Where a message was seen on the IMAP server: (inbox, folder, uidvalidity, uid)."""

    __tablename__ = "message_locations"

    inbox_id: Mapped[str] = mapped_column(
        ForeignKey("inboxes.id", ondelete="CASCADE"), primary_key=True
    )
    folder: Mapped[str] = mapped_column(Text, primary_key=True)
    uidvalidity: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    uid: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    message_id: Mapped[str] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), index=True
    )


class Attachment(Base):
    __tablename__ = "attachments"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    message_id: Mapped[str] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), index=True
    )
    filename: Mapped[str | None] = mapped_column(Text)
    content_type: Mapped[str] = mapped_column(String(255))
    content_id: Mapped[str | None] = mapped_column(Text)
    inline: Mapped[bool] = mapped_column(Boolean, default=False)
    size: Mapped[int] = mapped_column(Integer)
    # Stored only up to the configured cap; beyond it, `data` is NULL and `truncated` set.
    data: Mapped[bytes | None] = mapped_column(LargeBinary)
    truncated: Mapped[bool] = mapped_column(Boolean, default=False)


class Tag(Base):
    __tablename__ = "tags"
    __table_args__ = (Index("uq_tags_name", text("lower(name)"), unique=True),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column()


class ConversationTag(Base):
    __tablename__ = "conversation_tags"

    conversation_id: Mapped[str] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), primary_key=True
    )
    tag_id: Mapped[str] = mapped_column(
        ForeignKey("tags.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    created_at: Mapped[datetime] = mapped_column()


class Note(Base):
    """An internal note on a conversation: never sent to the customer."""

    __tablename__ = "notes"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    conversation_id: Mapped[str] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    inbox_id: Mapped[str] = mapped_column(ForeignKey("inboxes.id", ondelete="CASCADE"))
    author_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    body: Mapped[str] = mapped_column(Text)
    mentions: Mapped[list[str]] = mapped_column(ARRAY(Text), default=list)
    created_at: Mapped[datetime] = mapped_column()


class Activity(Base):
    """Something that happened to a conversation (status, priority, tags, assignment, rules,
    SLA, snooze), with who did it: the non-message half of the timeline."""

    __tablename__ = "activities"
    __table_args__ = (Index("ix_activities_conversation", "conversation_id", "created_at", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    # No foreign key: a conversation goes only with its inbox, whose cascade takes its
    # activities, and the SLA tick writes a thousand of them at a time (per-row checks).
    conversation_id: Mapped[str] = mapped_column(String(40))
    inbox_id: Mapped[str] = mapped_column(ForeignKey("inboxes.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    actor_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    data: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    created_at: Mapped[datetime] = mapped_column()
