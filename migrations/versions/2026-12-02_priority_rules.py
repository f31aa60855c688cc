"""Priority rules and each conversation's priority source.

Revision ID: 85955ddbb237
Revises: f53fbcea1c39
Create Date: 2026-12-02 04:00:00
"""

from collections.abc import Sequence

revision: str = "85955ddbb237"
down_revision: str | None = "f53fbcea1c39"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
