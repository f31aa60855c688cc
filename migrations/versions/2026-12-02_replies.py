"""Replies: outbox, templates, inbox SMTP settings, auto-acknowledgement, first response tracking.

Revision ID: f53fbcea1c39
Revises: 690d08f2e01d
Create Date: 2026-12-02 04:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "f53fbcea1c39"
down_revision: str | None = "690d08f2e01d"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("conversations", sa.Column("first_response_at", TS, nullable=True))
    op.add_column(
        "conversations",
        sa.Column("reply_count", sa.Integer(), server_default="0", nullable=False),
    )
    for column in (
        sa.Column("smtp_host", sa.String(length=255), nullable=True),
        sa.Column("smtp_port", sa.Integer(), nullable=True),
        sa.Column("smtp_security", sa.String(length=16), server_default="ssl", nullable=False),
        sa.Column("smtp_username", sa.String(length=320), nullable=True),
        sa.Column("smtp_secret_encrypted", sa.Text(), nullable=True),
        sa.Column("smtp_sent_folder", sa.Text(), nullable=True),
        sa.Column(
            "smtp_provider_files_sent", sa.Boolean(), server_default=sa.false(), nullable=False
        ),
        sa.Column("undo_send_seconds", sa.Integer(), server_default="0", nullable=False),
        sa.Column("auto_ack_enabled", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("auto_ack_template_id", sa.String(length=40), nullable=True),
        sa.Column("auto_ack_window_seconds", sa.Integer(), server_default="86400", nullable=False),
    ):
        op.add_column("inboxes", column)

    op.create_table(
        "templates",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("inbox_id", sa.String(length=40), nullable=True),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["inbox_id"], ["inboxes.id"], name="fk_templates_inbox_id_inboxes", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_templates"),
    )
    op.create_index("ix_templates_inbox_id", "templates", ["inbox_id"])

    op.create_table(
        "replies",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("inbox_id", sa.String(length=40), nullable=False),
        sa.Column("conversation_id", sa.String(length=40), nullable=False),
        sa.Column("author_id", sa.String(length=40), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("message_row_id", sa.String(length=40), nullable=False),
        sa.Column("message_id", sa.Text(), nullable=False),
        sa.Column("in_reply_to", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("references", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("from_name", sa.Text(), nullable=True),
        sa.Column("from_address", sa.String(length=320), nullable=False),
        sa.Column("to", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("cc", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("text_body", sa.Text(), nullable=False),
        sa.Column("html_body", sa.Text(), nullable=True),
        sa.Column("template_id", sa.String(length=40), nullable=True),
        sa.Column("mime", sa.LargeBinary(), nullable=False),
        sa.Column("send_at", TS, nullable=False),
        sa.Column("next_attempt_at", TS, nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("locked_by", sa.String(length=128), nullable=True),
        sa.Column("locked_until", TS, nullable=True),
        sa.Column("data_started_at", TS, nullable=True),
        sa.Column("smtp_response", sa.Text(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("reconcile_attempts", sa.Integer(), nullable=False),
        sa.Column("sent_copy", sa.String(length=16), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("sent_at", TS, nullable=True),
        sa.Column("cancelled_at", TS, nullable=True),
        sa.ForeignKeyConstraint(
            ["author_id"], ["users.id"], name="fk_replies_author_id_users", ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name="fk_replies_conversation_id_conversations",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["inbox_id"], ["inboxes.id"], name="fk_replies_inbox_id_inboxes", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_replies"),
        sa.UniqueConstraint("message_row_id", name="uq_replies_message_row_id"),
    )
    op.create_index(
        "ix_replies_due",
        "replies",
        ["next_attempt_at", "id"],
        postgresql_where=sa.text("status IN ('scheduled', 'queued')"),
    )
    op.create_index(
        "ix_replies_in_doubt",
        "replies",
        ["locked_until"],
        postgresql_where=sa.text("status IN ('sending', 'unknown')"),
    )
    op.create_index("ix_replies_conversation_id", "replies", ["conversation_id", "created_at"])

    op.create_table(
        "auto_ack_senders",
        sa.Column("inbox_id", sa.String(length=40), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("last_sent_at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["inbox_id"],
            ["inboxes.id"],
            name="fk_auto_ack_senders_inbox_id_inboxes",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("inbox_id", "address", name="pk_auto_ack_senders"),
    )
    op.create_table(
        "reply_signatures",
        sa.Column("user_id", sa.String(length=40), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_reply_signatures_user_id_users", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("user_id", name="pk_reply_signatures"),
    )


def downgrade() -> None:
    op.drop_table("reply_signatures")
    op.drop_table("auto_ack_senders")
    op.drop_index("ix_replies_conversation_id", table_name="replies")
    op.drop_index("ix_replies_in_doubt", table_name="replies")
    op.drop_index("ix_replies_due", table_name="replies")
    op.drop_table("replies")
    op.drop_index("ix_templates_inbox_id", table_name="templates")
    op.drop_table("templates")
    for name in (
        "auto_ack_window_seconds",
        "auto_ack_template_id",
        "auto_ack_enabled",
        "undo_send_seconds",
        "smtp_provider_files_sent",
        "smtp_sent_folder",
        "smtp_secret_encrypted",
        "smtp_username",
        "smtp_security",
        "smtp_port",
        "smtp_host",
    ):
        op.drop_column("inboxes", name)
    op.drop_column("conversations", "reply_count")
    op.drop_column("conversations", "first_response_at")
