"""Activities and alerts reach their conversation through the inbox's cascade.

Both tables are logs the SLA tick writes a thousand rows at a time. Each row's
conversation is one of the inbox it names, and conversations go only with their inbox,
whose foreign key (ON DELETE CASCADE) takes both logs with it; the conversation's own
foreign key added a per-row check and guarded nothing more.

Revision ID: 9b2e4f7c1d05
Revises: 3c0f6e1d9a27
Create Date: 2026-12-02 07:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "9b2e4f7c1d05"
down_revision: str | None = "3c0f6e1d9a27"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_constraint(
        "fk_activities_conversation_id_conversations", "activities", type_="foreignkey"
    )
    op.drop_constraint("fk_alerts_conversation_id_conversations", "alerts", type_="foreignkey")


def downgrade() -> None:
    op.create_foreign_key(
        "fk_alerts_conversation_id_conversations",
        "alerts",
        "conversations",
        ["conversation_id"],
        ["id"],
        ondelete="CASCADE",
    )
    op.create_foreign_key(
        "fk_activities_conversation_id_conversations",
        "activities",
        "conversations",
        ["conversation_id"],
        ["id"],
        ondelete="CASCADE",
    )
