"""Priority rules and each conversation's priority source.

Revision ID: 85955ddbb237
Revises: f53fbcea1c39
Create Date: 2026-12-02 04:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "85955ddbb237"
down_revision: str | None = "f53fbcea1c39"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "priority_rules",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("inbox_id", sa.String(length=40), nullable=True),
        sa.Column("keywords", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("exclusions", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("match_in", postgresql.ARRAY(sa.String(length=16)), nullable=False),
        sa.Column("sender_domains", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("priority", sa.String(length=16), nullable=True),
        sa.Column("tags", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["inbox_id"],
            ["inboxes.id"],
            name=op.f("fk_priority_rules_inbox_id_inboxes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_priority_rules")),
    )
    op.create_index(
        op.f("ix_priority_rules_inbox_id"), "priority_rules", ["inbox_id"], unique=False
    )
    op.create_index("ix_priority_rules_position", "priority_rules", ["position", "id"])
    op.create_table(
        "priority_rules_revision",
        sa.Column("id", sa.SmallInteger(), nullable=False),
        sa.Column("revision", sa.String(length=40), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_priority_rules_revision")),
    )
    op.execute("INSERT INTO priority_rules_revision (id, revision) VALUES (1, 'initial')")
    op.add_column(
        "conversations",
        sa.Column("priority_source", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    )


def downgrade() -> None:
    op.drop_column("conversations", "priority_source")
    op.drop_table("priority_rules_revision")
    op.drop_index("ix_priority_rules_position", table_name="priority_rules")
    op.drop_index(op.f("ix_priority_rules_inbox_id"), table_name="priority_rules")
    op.drop_table("priority_rules")
