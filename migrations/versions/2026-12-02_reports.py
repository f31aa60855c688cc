"""Reports: CSAT ratings and what the summary reads.

Revision ID: 3c0f6e1d9a27
Revises: 50ff6c0f6138
Create Date: 2026-12-02 04:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "3c0f6e1d9a27"
down_revision: str | None = "50ff6c0f6138"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "csat_ratings",
        sa.Column("id", sa.Integer(), sa.Identity(always=False), nullable=False),
        sa.Column("conversation_id", sa.String(length=40), nullable=False),
        sa.Column("inbox_id", sa.String(length=40), nullable=False),
        sa.Column("cycle", sa.Integer(), nullable=False),
        sa.Column("score", sa.SmallInteger(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("score BETWEEN 1 AND 5", name=op.f("ck_csat_ratings_score_range")),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_csat_ratings_conversation_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["inbox_id"],
            ["inboxes.id"],
            name=op.f("fk_csat_ratings_inbox_id_inboxes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_csat_ratings")),
        sa.UniqueConstraint(
            "conversation_id", "cycle", name=op.f("uq_csat_ratings_conversation_id_cycle")
        ),
    )
    op.create_index(op.f("ix_csat_ratings_inbox_id"), "csat_ratings", ["inbox_id"])
    op.add_column("conversations", sa.Column("resolved_at", sa.DateTime(timezone=True)))
    op.add_column(
        "conversations",
        sa.Column("reopen_count", sa.Integer(), server_default="0", nullable=False),
    )
    # The history so far, from the status events every status change wrote.
    op.execute(
        """
        UPDATE conversations c
        SET resolved_at = h.resolved_at, reopen_count = h.reopens
        FROM (
            SELECT conversation_id,
                   max(created_at) FILTER (WHERE data->'conversation'->>'status' = 'resolved'
                       AND data->>'previous_status' IS DISTINCT FROM 'resolved') AS resolved_at,
                   count(*) FILTER (WHERE data->>'previous_status' = 'resolved'
                       AND data->'conversation'->>'status' <> 'resolved') AS reopens
            FROM events
            WHERE type = 'conversation.status_changed' AND conversation_id IS NOT NULL
            GROUP BY conversation_id
        ) h
        WHERE h.conversation_id = c.id
        """
    )
    # Every status change, whichever code path makes it, keeps the two facts; stamped with
    # `updated_at`, which the service sets from its (injectable) clock in the same UPDATE.
    op.execute(
        """
        CREATE FUNCTION conversations_status_facts() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.status = 'resolved'
               AND (TG_OP = 'INSERT' OR OLD.status IS DISTINCT FROM 'resolved') THEN
                NEW.resolved_at := NEW.updated_at;
            ELSIF TG_OP = 'UPDATE' AND OLD.status = 'resolved'
                  AND NEW.status IS DISTINCT FROM 'resolved' THEN
                NEW.reopen_count := OLD.reopen_count + 1;
            END IF;
            RETURN NEW;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER conversations_status_facts BEFORE INSERT OR UPDATE OF status "
        "ON conversations FOR EACH ROW EXECUTE FUNCTION conversations_status_facts()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER conversations_status_facts ON conversations")
    op.execute("DROP FUNCTION conversations_status_facts()")
    op.drop_column("conversations", "reopen_count")
    op.drop_column("conversations", "resolved_at")
    op.drop_index(op.f("ix_csat_ratings_inbox_id"), table_name="csat_ratings")
    op.drop_table("csat_ratings")
