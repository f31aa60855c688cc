"""Auto-assignment and presence.

Revision ID: 43c461c51ffb
Revises: 85955ddbb237
Create Date: 2026-12-02 04:00:00
"""

from collections.abc import Sequence

revision: str = "43c461c51ffb"
down_revision: str | None = "85955ddbb237"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
