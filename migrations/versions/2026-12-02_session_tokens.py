"""Browser session tokens.

Revision ID: 50ff6c0f6138
Revises: 6ab69c1c58ea
Create Date: 2026-12-02 04:00:00
"""

from collections.abc import Sequence

revision: str = "50ff6c0f6138"
down_revision: str | None = "6ab69c1c58ea"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
