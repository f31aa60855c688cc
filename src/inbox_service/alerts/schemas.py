from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from inbox_service.core.pagination import Page


class AlertOut(BaseModel):
    """Something a person should look at."""

    id: str
    kind: str = Field(
        description="sla_warning, sla_breached, snooze_ended, sync_failed, webhook_disabled."
    )
    inbox_id: str | None
    conversation_id: str | None
    message: str
    data: dict[str, Any] = Field(description="Details; for SLA alerts metric, cycle, due_at.")
    created_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None


class AlertPage(Page[AlertOut]):
    """A page of alerts, newest first."""
