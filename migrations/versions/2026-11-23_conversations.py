"""Conversations API: tags, notes, the activity half of the timeline, a priority rank and
the list indexes, snooze wake-up index, and full-text search over messages.

Revision ID: 796504e99b81
Revises: 804b12f1a6b9
Create Date: 2026-11-23 18:19:59.481804
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "796504e99b81"
down_revision: str | None = "804b12f1a6b9"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("conversations", sa.Column("merged_into_id", sa.String(length=40), nullable=True))
    op.create_foreign_key(
        op.f("fk_conversations_merged_into_id_conversations"),
        "conversations",
        "conversations",
        ["merged_into_id"],
        ["id"],
        ondelete="SET NULL",
    )
    op.add_column(
        "contacts", sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False)
    )
    op.create_table(
        "tags",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tags")),
    )
    op.create_index("uq_tags_name", "tags", [sa.literal_column("lower(name)")], unique=True)
    op.create_table(
        "activities",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("conversation_id", sa.String(length=40), nullable=False),
        sa.Column("inbox_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("actor_id", sa.String(length=40), nullable=True),
        sa.Column("data", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["actor_id"],
            ["users.id"],
            name=op.f("fk_activities_actor_id_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_activities_conversation_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["inbox_id"],
            ["inboxes.id"],
            name=op.f("fk_activities_inbox_id_inboxes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_activities")),
    )
    op.create_index(
        "ix_activities_conversation",
        "activities",
        ["conversation_id", "created_at", "id"],
        unique=False,
    )
    op.create_table(
        "conversation_tags",
        sa.Column("conversation_id", sa.String(length=40), nullable=False),
        sa.Column("tag_id", sa.String(length=40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_conversation_tags_conversation_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tag_id"],
            ["tags.id"],
            name=op.f("fk_conversation_tags_tag_id_tags"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("conversation_id", "tag_id", name=op.f("pk_conversation_tags")),
    )
    op.create_index(
        op.f("ix_conversation_tags_tag_id"), "conversation_tags", ["tag_id"], unique=False
    )
    op.create_table(
        "notes",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("conversation_id", sa.String(length=40), nullable=False),
        sa.Column("inbox_id", sa.String(length=40), nullable=False),
        sa.Column("author_id", sa.String(length=40), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("mentions", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["author_id"], ["users.id"], name=op.f("fk_notes_author_id_users"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_notes_conversation_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["inbox_id"], ["inboxes.id"], name=op.f("fk_notes_inbox_id_inboxes"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notes")),
    )
    op.create_index(op.f("ix_notes_conversation_id"), "notes", ["conversation_id"], unique=False)
    op.add_column(
        "conversations",
        sa.Column(
            "priority_rank",
            sa.SmallInteger(),
            sa.Computed(
                "CASE priority WHEN 'urgent' THEN 0 WHEN 'high' THEN 1 WHEN 'normal' THEN 2 ELSE 3 END",
                persisted=True,
            ),
            nullable=False,
        ),
    )
    op.drop_index(op.f("ix_conversations_inbox_id_last_message_at"), table_name="conversations")
    op.create_index(
        "ix_conversations_inbox_id_last_message_at",
        "conversations",
        ["inbox_id", "last_message_at", "id"],
        unique=False,
    )
    op.create_index(
        "ix_conversations_assignee_id",
        "conversations",
        ["assignee_id", "last_message_at"],
        unique=False,
    )
    op.create_index(
        "ix_conversations_last_message_at", "conversations", ["last_message_at", "id"], unique=False
    )
    op.create_index(
        "ix_conversations_priority",
        "conversations",
        [
            "inbox_id",
            "priority_rank",
            sa.literal_column("coalesce(waiting_since, 'infinity')"),
            "id",
        ],
        unique=False,
    )
    op.create_index(
        "ix_conversations_snoozed_until",
        "conversations",
        ["snoozed_until"],
        unique=False,
        postgresql_where=sa.text("status = 'snoozed'"),
    )
    op.create_index(
        "ix_conversations_status_waiting",
        "conversations",
        ["status", sa.literal_column("coalesce(waiting_since, 'infinity')"), "id"],
        unique=False,
    )
    op.create_index(
        "ix_conversations_status_priority",
        "conversations",
        ["status", "priority_rank", sa.literal_column("coalesce(waiting_since, 'infinity')"), "id"],
        unique=False,
    )
    op.create_index(
        "ix_conversations_waiting",
        "conversations",
        ["inbox_id", sa.literal_column("coalesce(waiting_since, 'infinity')"), "id"],
        unique=False,
    )
    op.add_column(
        "messages",
        sa.Column(
            "search_vector",
            postgresql.TSVECTOR(),
            sa.Computed(
                "to_tsvector('simple'::regconfig, coalesce(subject, '') || ' ' || coalesce(from_name, '') || ' ' || coalesce(from_address, '') || ' ' || \"to\"::text || ' ' || cc::text || ' ' || left(coalesce(text_body, ''), 100000))",
                persisted=True,
            ),
            nullable=False,
        ),
    )
    op.create_index(
        "ix_messages_search", "messages", ["search_vector"], unique=False, postgresql_using="gin"
    )


def downgrade() -> None:
    op.drop_constraint(
        op.f("fk_conversations_merged_into_id_conversations"), "conversations", type_="foreignkey"
    )
    op.drop_column("conversations", "merged_into_id")
    op.drop_column("contacts", "version")
    op.drop_index("ix_messages_search", table_name="messages", postgresql_using="gin")
    op.drop_column("messages", "search_vector")
    op.drop_index("ix_conversations_waiting", table_name="conversations")
    op.drop_index("ix_conversations_status_priority", table_name="conversations")
    op.drop_index("ix_conversations_status_waiting", table_name="conversations")
    op.drop_index(
        "ix_conversations_snoozed_until",
        table_name="conversations",
        postgresql_where=sa.text("status = 'snoozed'"),
    )
    op.drop_index("ix_conversations_priority", table_name="conversations")
    op.drop_index("ix_conversations_last_message_at", table_name="conversations")
    op.drop_index("ix_conversations_assignee_id", table_name="conversations")
    op.drop_index("ix_conversations_inbox_id_last_message_at", table_name="conversations")
    op.create_index(
        op.f("ix_conversations_inbox_id_last_message_at"),
        "conversations",
        ["inbox_id", "last_message_at"],
        unique=False,
    )
    op.drop_column("conversations", "priority_rank")
    op.drop_index(op.f("ix_notes_conversation_id"), table_name="notes")
    op.drop_table("notes")
    op.drop_index(op.f("ix_conversation_tags_tag_id"), table_name="conversation_tags")
    op.drop_table("conversation_tags")
    op.drop_index("ix_activities_conversation", table_name="activities")
    op.drop_table("activities")
    op.drop_index("uq_tags_name", table_name="tags")
    op.drop_table("tags")
