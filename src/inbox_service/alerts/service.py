"""Raising alerts; reading and acknowledging them is the SLA domain's API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from inbox_service.alerts.models import Alert
from inbox_service.core.ids import new_id


async def raise_alert(
    session: AsyncSession,
    kind: str,
    message: str,
    *,
    now: datetime,
    inbox_id: str | None = None,
    conversation_id: str | None = None,
    data: dict[str, Any] | None = None,
) -> Alert:
    """Record an alert in the caller's transaction."""
    alert = Alert(
        id=new_id("alr"),
        kind=kind,
        message=message[:500],
        inbox_id=inbox_id,
        conversation_id=conversation_id,
        data=data or {},
        created_at=now,
    )
    session.add(alert)
    await session.flush()
    return alert
