"""Replies: outbox, templates, inbox SMTP settings, auto-acknowledgement, first response tracking.

Revision ID: f53fbcea1c39
Revises: 690d08f2e01d
Create Date: 2026-12-02 04:00:00
"""

from collections.abc import Sequence

revision: str = "f53fbcea1c39"
down_revision: str | None = "690d08f2e01d"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
