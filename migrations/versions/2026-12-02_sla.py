"""SLA policies, due times on conversations, alerts.

Revision ID: 6ab69c1c58ea
Revises: 43c461c51ffb
Create Date: 2026-12-02 04:00:00
"""

from collections.abc import Sequence

revision: str = "6ab69c1c58ea"
down_revision: str | None = "43c461c51ffb"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
