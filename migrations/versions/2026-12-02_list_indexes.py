"""Indexes for the busiest list sorts and for due webhook deliveries.

Revision ID: 690d08f2e01d
Revises: 72a015505915
Create Date: 2026-12-02 04:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "690d08f2e01d"
down_revision: str | None = "72a015505915"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_conversations_unassigned_waiting",
        "conversations",
        ["inbox_id", sa.literal_column("coalesce(waiting_since, 'infinity')"), "id"],
        postgresql_where=sa.text("status = 'open' AND assignee_id IS NULL"),
    )
    op.create_index(
        "ix_conversations_inbox_status_last_message_at",
        "conversations",
        ["inbox_id", "status", "last_message_at", "id"],
    )
    op.create_index(
        "ix_conversations_assignee_status_last_message_at",
        "conversations",
        ["assignee_id", "status", "last_message_at", "id"],
    )
    # The sender claims in (next_attempt_at, id) order.
    op.drop_index("ix_webhook_deliveries_due", table_name="webhook_deliveries")
    op.create_index(
        "ix_webhook_deliveries_due",
        "webhook_deliveries",
        ["next_attempt_at", "id"],
        postgresql_where=sa.text("state = 'pending'"),
    )


def downgrade() -> None:
    op.drop_index("ix_webhook_deliveries_due", table_name="webhook_deliveries")
    op.create_index(
        "ix_webhook_deliveries_due",
        "webhook_deliveries",
        ["next_attempt_at"],
        postgresql_where=sa.text("state = 'pending'"),
    )
    op.drop_index("ix_conversations_assignee_status_last_message_at", table_name="conversations")
    op.drop_index("ix_conversations_inbox_status_last_message_at", table_name="conversations")
    op.drop_index("ix_conversations_unassigned_waiting", table_name="conversations")
