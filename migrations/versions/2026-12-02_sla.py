"""SLA policies, due times on conversations, alerts.

Revision ID: 6ab69c1c58ea
Revises: 43c461c51ffb
Create Date: 2026-12-02 04:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "6ab69c1c58ea"
down_revision: str | None = "43c461c51ffb"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "sla_policies",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("targets", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("warn_before_seconds", sa.Integer(), nullable=True),
        sa.Column("warn_before_percent", sa.SmallInteger(), nullable=True),
        sa.Column("business_hours", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sla_policies")),
    )
    op.create_table(
        "sla_policy_inboxes",
        sa.Column("inbox_id", sa.String(length=40), nullable=False),
        sa.Column("policy_id", sa.String(length=40), nullable=False),
        sa.ForeignKeyConstraint(
            ["inbox_id"],
            ["inboxes.id"],
            name=op.f("fk_sla_policy_inboxes_inbox_id_inboxes"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["policy_id"],
            ["sla_policies.id"],
            name=op.f("fk_sla_policy_inboxes_policy_id_sla_policies"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("inbox_id", name=op.f("pk_sla_policy_inboxes")),
    )
    op.create_index(op.f("ix_sla_policy_inboxes_policy_id"), "sla_policy_inboxes", ["policy_id"])
    op.create_table(
        "conversation_slas",
        sa.Column("conversation_id", sa.String(length=40), nullable=False),
        sa.Column("metric", sa.String(length=16), nullable=False),
        sa.Column("cycle", sa.Integer(), nullable=False),
        sa.Column("target_seconds", sa.Integer(), nullable=True),
        sa.Column("started_at", TS, nullable=True),
        sa.Column("consumed_seconds", sa.Integer(), nullable=False),
        sa.Column("running_since", TS, nullable=True),
        sa.Column("due_at", TS, nullable=True),
        sa.Column("warn_at", TS, nullable=True),
        sa.Column("warned_at", TS, nullable=True),
        sa.Column("breached_at", TS, nullable=True),
        sa.Column("met_at", TS, nullable=True),
        sa.Column("met_by", sa.String(length=40), nullable=True),
        sa.Column("next_alarm_at", TS, nullable=True),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_conversation_slas_conversation_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["met_by"],
            ["users.id"],
            name=op.f("fk_conversation_slas_met_by_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("conversation_id", "metric", name=op.f("pk_conversation_slas")),
    )
    op.add_column("conversations", sa.Column("sla_policy_id", sa.String(length=40), nullable=True))
    op.add_column("conversations", sa.Column("sla_due_at", TS, nullable=True))
    op.add_column("conversations", sa.Column("sla_warn_at", TS, nullable=True))
    op.create_foreign_key(
        op.f("fk_conversations_sla_policy_id_sla_policies"),
        "conversations",
        "sla_policies",
        ["sla_policy_id"],
        ["id"],
        ondelete="SET NULL",
    )
    op.create_index(
        "ix_conversation_slas_next_alarm_at",
        "conversation_slas",
        ["next_alarm_at"],
        postgresql_where=sa.text("next_alarm_at IS NOT NULL"),
    )
    op.create_index(
        "ix_conversations_sla_due",
        "conversations",
        ["inbox_id", sa.text("coalesce(sla_due_at, 'infinity')"), "id"],
    )
    op.create_index(
        "ix_conversations_status_sla_due",
        "conversations",
        ["status", sa.text("coalesce(sla_due_at, 'infinity')"), "id"],
    )
    op.create_index(
        "ix_conversations_sla_warn_at",
        "conversations",
        ["sla_warn_at", "sla_due_at", "id"],
        postgresql_where=sa.text("sla_warn_at IS NOT NULL"),
    )
    op.create_index(
        "uq_alerts_sla",
        "alerts",
        ["conversation_id", "kind", sa.text("(data ->> 'metric')"), sa.text("(data ->> 'cycle')")],
        unique=True,
        postgresql_where=sa.text("kind IN ('sla_warning', 'sla_breached')"),
    )
    op.create_index("ix_alerts_created_at", "alerts", ["created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_alerts_created_at", table_name="alerts")
    op.drop_index(
        "uq_alerts_sla",
        table_name="alerts",
        postgresql_where=sa.text("kind IN ('sla_warning', 'sla_breached')"),
    )
    op.drop_index(
        "ix_conversations_sla_warn_at",
        table_name="conversations",
        postgresql_where=sa.text("sla_warn_at IS NOT NULL"),
    )
    op.drop_index("ix_conversations_status_sla_due", table_name="conversations")
    op.drop_index("ix_conversations_sla_due", table_name="conversations")
    op.drop_index(
        "ix_conversation_slas_next_alarm_at",
        table_name="conversation_slas",
        postgresql_where=sa.text("next_alarm_at IS NOT NULL"),
    )
    op.drop_constraint(
        op.f("fk_conversations_sla_policy_id_sla_policies"), "conversations", type_="foreignkey"
    )
    op.drop_column("conversations", "sla_warn_at")
    op.drop_column("conversations", "sla_due_at")
    op.drop_column("conversations", "sla_policy_id")
    op.drop_table("conversation_slas")
    op.drop_index(op.f("ix_sla_policy_inboxes_policy_id"), table_name="sla_policy_inboxes")
    op.drop_table("sla_policy_inboxes")
    op.drop_table("sla_policies")
