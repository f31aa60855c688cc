"""IMAP ingest: IMAP settings on inboxes, contacts, conversations, messages (raw bytes,
attachments, server locations), per-inbox and per-folder sync state, alerts.

Revision ID: 804b12f1a6b9
Revises: be10f0083a74
Create Date: 2026-11-23 17:31:00.886540
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "804b12f1a6b9"
down_revision: str | None = "be10f0083a74"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "contacts",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_contacts")),
        sa.UniqueConstraint("email", name=op.f("uq_contacts_email")),
    )
    op.create_table(
        "conversations",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("inbox_id", sa.String(length=40), nullable=False),
        sa.Column("contact_id", sa.String(length=40), nullable=True),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("base_subject", sa.Text(), nullable=False),
        sa.Column("thread_token", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("priority", sa.String(length=16), nullable=False),
        sa.Column("assignee_id", sa.String(length=40), nullable=True),
        sa.Column("snoozed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("message_count", sa.Integer(), nullable=False),
        sa.Column("snippet", sa.Text(), nullable=False),
        sa.Column("last_message_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("waiting_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["assignee_id"],
            ["users.id"],
            name=op.f("fk_conversations_assignee_id_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["contact_id"], ["contacts.id"], name=op.f("fk_conversations_contact_id_contacts")
        ),
        sa.ForeignKeyConstraint(
            ["inbox_id"],
            ["inboxes.id"],
            name=op.f("fk_conversations_inbox_id_inboxes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_conversations")),
        sa.UniqueConstraint("thread_token", name=op.f("uq_conversations_thread_token")),
    )
    op.create_index(
        op.f("ix_conversations_contact_id"), "conversations", ["contact_id"], unique=False
    )
    op.create_index(
        "ix_conversations_inbox_id_last_message_at",
        "conversations",
        ["inbox_id", "last_message_at"],
        unique=False,
    )
    op.create_index(
        "ix_conversations_subject_lookup",
        "conversations",
        ["inbox_id", "contact_id", "base_subject", "last_message_at"],
        unique=False,
    )
    op.create_table(
        "folder_sync_states",
        sa.Column("inbox_id", sa.String(length=40), nullable=False),
        sa.Column("folder", sa.Text(), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=True),
        sa.Column("last_uid", sa.BigInteger(), nullable=False),
        sa.Column("uidnext", sa.BigInteger(), nullable=True),
        sa.Column("highestmodseq", sa.BigInteger(), nullable=True),
        sa.Column("uidvalidity_changes", sa.Integer(), nullable=False),
        sa.Column("last_success_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["inbox_id"],
            ["inboxes.id"],
            name=op.f("fk_folder_sync_states_inbox_id_inboxes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("inbox_id", "folder", name=op.f("pk_folder_sync_states")),
    )
    op.create_table(
        "inbox_sync_states",
        sa.Column("inbox_id", sa.String(length=40), nullable=False),
        sa.Column("worker_id", sa.String(length=128), nullable=True),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_success_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_error_reason", sa.String(length=32), nullable=True),
        sa.Column("last_error_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["inbox_id"],
            ["inboxes.id"],
            name=op.f("fk_inbox_sync_states_inbox_id_inboxes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("inbox_id", name=op.f("pk_inbox_sync_states")),
    )
    op.create_table(
        "alerts",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("inbox_id", sa.String(length=40), nullable=True),
        sa.Column("conversation_id", sa.String(length=40), nullable=True),
        sa.Column("message", sa.String(length=500), nullable=False),
        sa.Column("data", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("acknowledged_by", sa.String(length=40), nullable=True),
        sa.ForeignKeyConstraint(
            ["acknowledged_by"],
            ["users.id"],
            name=op.f("fk_alerts_acknowledged_by_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_alerts_conversation_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["inbox_id"],
            ["inboxes.id"],
            name=op.f("fk_alerts_inbox_id_inboxes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
    )
    op.create_index(
        "ix_alerts_open",
        "alerts",
        ["inbox_id", "created_at"],
        unique=False,
        postgresql_where=sa.text("acknowledged_at IS NULL"),
    )
    op.create_table(
        "messages",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("inbox_id", sa.String(length=40), nullable=False),
        sa.Column("conversation_id", sa.String(length=40), nullable=True),
        sa.Column("direction", sa.String(length=16), nullable=False),
        sa.Column("dedupe_key", sa.Text(), nullable=False),
        sa.Column("message_id", sa.Text(), nullable=True),
        sa.Column("in_reply_to", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("references", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("parent_ids", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("thread_index_guid", sa.LargeBinary(), nullable=True),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("from_name", sa.Text(), nullable=True),
        sa.Column("from_address", sa.String(length=320), nullable=True),
        sa.Column("to", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("cc", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("reply_to", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("text_body", sa.Text(), nullable=True),
        sa.Column("html_body", sa.Text(), nullable=True),
        sa.Column("snippet", sa.Text(), nullable=False),
        sa.Column("threaded_by", sa.String(length=16), nullable=False),
        sa.Column("auto_kind", sa.String(length=16), nullable=True),
        sa.Column("parse_status", sa.String(length=16), nullable=False),
        sa.Column("parse_error", sa.Text(), nullable=True),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("raw_sha256", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_messages_conversation_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["inbox_id"],
            ["inboxes.id"],
            name=op.f("fk_messages_inbox_id_inboxes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messages")),
        sa.UniqueConstraint("inbox_id", "dedupe_key", name=op.f("uq_messages_inbox_id_dedupe_key")),
    )
    op.create_index(
        "ix_messages_conversation_id_received_at",
        "messages",
        ["conversation_id", "received_at"],
        unique=False,
    )
    op.create_index(
        "ix_messages_inbox_id_message_id", "messages", ["inbox_id", "message_id"], unique=False
    )
    op.create_index(
        "ix_messages_parent_ids", "messages", ["parent_ids"], unique=False, postgresql_using="gin"
    )
    op.create_index(
        "ix_messages_quarantine",
        "messages",
        ["inbox_id", "received_at"],
        unique=False,
        postgresql_where=sa.text("conversation_id IS NULL"),
    )
    op.create_table(
        "attachments",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("message_id", sa.String(length=40), nullable=False),
        sa.Column("filename", sa.Text(), nullable=True),
        sa.Column("content_type", sa.String(length=255), nullable=False),
        sa.Column("content_id", sa.Text(), nullable=True),
        sa.Column("inline", sa.Boolean(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=True),
        sa.Column("truncated", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name=op.f("fk_attachments_message_id_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_attachments")),
    )
    op.create_index(op.f("ix_attachments_message_id"), "attachments", ["message_id"], unique=False)
    op.create_table(
        "message_locations",
        sa.Column("inbox_id", sa.String(length=40), nullable=False),
        sa.Column("folder", sa.Text(), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=False),
        sa.Column("uid", sa.BigInteger(), nullable=False),
        sa.Column("message_id", sa.String(length=40), nullable=False),
        sa.ForeignKeyConstraint(
            ["inbox_id"],
            ["inboxes.id"],
            name=op.f("fk_message_locations_inbox_id_inboxes"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name=op.f("fk_message_locations_message_id_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "inbox_id", "folder", "uidvalidity", "uid", name=op.f("pk_message_locations")
        ),
    )
    op.create_index(
        op.f("ix_message_locations_message_id"), "message_locations", ["message_id"], unique=False
    )
    op.create_table(
        "message_raws",
        sa.Column("message_id", sa.String(length=40), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name=op.f("fk_message_raws_message_id_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("message_id", name=op.f("pk_message_raws")),
    )
    op.add_column("inboxes", sa.Column("imap_host", sa.String(length=255), nullable=True))
    op.add_column("inboxes", sa.Column("imap_port", sa.Integer(), nullable=True))
    op.add_column(
        "inboxes",
        sa.Column(
            "imap_security", sa.String(length=16), server_default=sa.text("'ssl'"), nullable=False
        ),
    )
    op.add_column("inboxes", sa.Column("imap_username", sa.String(length=320), nullable=True))
    op.add_column(
        "inboxes",
        sa.Column(
            "imap_auth", sa.String(length=16), server_default=sa.text("'password'"), nullable=False
        ),
    )
    op.add_column("inboxes", sa.Column("imap_secret_encrypted", sa.Text(), nullable=True))
    op.add_column(
        "inboxes",
        sa.Column(
            "imap_folders",
            postgresql.ARRAY(sa.Text()),
            server_default=sa.text("'{INBOX}'"),
            nullable=False,
        ),
    )
    op.add_column(
        "inboxes",
        sa.Column("imap_poll_seconds", sa.Integer(), server_default=sa.text("60"), nullable=False),
    )
    op.add_column(
        "inboxes",
        sa.Column("imap_enabled", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.add_column(
        "inboxes",
        sa.Column(
            "subject_threading_days", sa.Integer(), server_default=sa.text("30"), nullable=False
        ),
    )


def downgrade() -> None:
    op.drop_column("inboxes", "subject_threading_days")
    op.drop_column("inboxes", "imap_enabled")
    op.drop_column("inboxes", "imap_poll_seconds")
    op.drop_column("inboxes", "imap_folders")
    op.drop_column("inboxes", "imap_secret_encrypted")
    op.drop_column("inboxes", "imap_auth")
    op.drop_column("inboxes", "imap_username")
    op.drop_column("inboxes", "imap_security")
    op.drop_column("inboxes", "imap_port")
    op.drop_column("inboxes", "imap_host")
    op.drop_table("message_raws")
    op.drop_index(op.f("ix_message_locations_message_id"), table_name="message_locations")
    op.drop_table("message_locations")
    op.drop_index(op.f("ix_attachments_message_id"), table_name="attachments")
    op.drop_table("attachments")
    op.drop_index(
        "ix_messages_quarantine",
        table_name="messages",
        postgresql_where=sa.text("conversation_id IS NULL"),
    )
    op.drop_index("ix_messages_parent_ids", table_name="messages", postgresql_using="gin")
    op.drop_index("ix_messages_inbox_id_message_id", table_name="messages")
    op.drop_index("ix_messages_conversation_id_received_at", table_name="messages")
    op.drop_table("messages")
    op.drop_index(
        "ix_alerts_open", table_name="alerts", postgresql_where=sa.text("acknowledged_at IS NULL")
    )
    op.drop_table("alerts")
    op.drop_table("inbox_sync_states")
    op.drop_table("folder_sync_states")
    op.drop_index("ix_conversations_subject_lookup", table_name="conversations")
    op.drop_index("ix_conversations_inbox_id_last_message_at", table_name="conversations")
    op.drop_index(op.f("ix_conversations_contact_id"), table_name="conversations")
    op.drop_table("conversations")
    op.drop_table("contacts")
