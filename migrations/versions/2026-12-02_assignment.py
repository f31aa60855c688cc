"""Auto-assignment and presence.

Revision ID: 43c461c51ffb
Revises: 85955ddbb237
Create Date: 2026-12-02 04:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "43c461c51ffb"
down_revision: str | None = "85955ddbb237"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "inboxes",
        sa.Column("auto_assignment", sa.String(length=16), server_default="off", nullable=False),
    )
    op.create_table(
        "assignment_cursors",
        sa.Column("inbox_id", sa.String(length=40), nullable=False),
        sa.Column("last_user_id", sa.String(length=40), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["inbox_id"],
            ["inboxes.id"],
            name=op.f("fk_assignment_cursors_inbox_id_inboxes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("inbox_id", name=op.f("pk_assignment_cursors")),
    )
    op.create_table(
        "assignment_requests",
        sa.Column("conversation_id", sa.String(length=40), nullable=False),
        sa.Column("inbox_id", sa.String(length=40), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_assignment_requests_conversation_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["inbox_id"],
            ["inboxes.id"],
            name=op.f("fk_assignment_requests_inbox_id_inboxes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("conversation_id", name=op.f("pk_assignment_requests")),
    )
    op.create_index(
        "ix_assignment_requests_due", "assignment_requests", ["inbox_id", "next_attempt_at"]
    )
    op.create_table(
        "presences",
        sa.Column("conversation_id", sa.String(length=40), nullable=False),
        sa.Column("user_id", sa.String(length=40), nullable=False),
        sa.Column("inbox_id", sa.String(length=40), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_presences_conversation_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["inbox_id"],
            ["inboxes.id"],
            name=op.f("fk_presences_inbox_id_inboxes"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_presences_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("conversation_id", "user_id", name=op.f("pk_presences")),
    )
    op.create_index(op.f("ix_presences_expires_at"), "presences", ["expires_at"])
    op.create_index(op.f("ix_presences_user_id"), "presences", ["user_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_presences_user_id"), table_name="presences")
    op.drop_index(op.f("ix_presences_expires_at"), table_name="presences")
    op.drop_table("presences")
    op.drop_index("ix_assignment_requests_due", table_name="assignment_requests")
    op.drop_table("assignment_requests")
    op.drop_table("assignment_cursors")
    op.drop_column("inboxes", "auto_assignment")
