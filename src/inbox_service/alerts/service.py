"""Alerts: raised by the domains (sync failures, SLA warnings and breaches, snooze
wake-ups, disabled webhooks), listed and acknowledged through `GET /v1/alerts`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from inbox_service.alerts.models import Alert
from inbox_service.core.auth import Caller
from inbox_service.core.errors import NotFound
from inbox_service.core.ids import new_id
from inbox_service.core.pagination import PageParams, keyset_page


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
    alert = new_alert(
        kind, message, now=now, inbox_id=inbox_id, conversation_id=conversation_id, data=data
    )
    session.add(alert)
    await session.flush()
    return alert


def new_alert(
    kind: str,
    message: str,
    *,
    now: datetime,
    inbox_id: str | None = None,
    conversation_id: str | None = None,
    data: dict[str, Any] | None = None,
) -> Alert:
    """An alert row to add to the session (for writers that add many at once)."""
    return Alert(
        id=new_id("alr"),
        kind=kind,
        message=message[:500],
        inbox_id=inbox_id,
        conversation_id=conversation_id,
        data=data or {},
        created_at=now,
    )


async def list_alerts(
    session: AsyncSession,
    caller: Caller,
    params: PageParams,
    *,
    kinds: Sequence[str] = (),
    inbox_id: str | None = None,
    acknowledged: bool | None = None,
) -> tuple[list[Alert], str | None]:
    """Alerts of the caller's inboxes, newest first; alerts of no inbox only for admins."""
    stmt = select(Alert).where(caller.scope(Alert.inbox_id))
    if kinds:
        stmt = stmt.where(Alert.kind.in_(list(kinds)))
    if inbox_id is not None:
        stmt = stmt.where(Alert.inbox_id == inbox_id)
    if acknowledged is not None:
        stmt = stmt.where(
            Alert.acknowledged_at.is_not(None) if acknowledged else Alert.acknowledged_at.is_(None)
        )
    return await keyset_page(
        session,
        stmt,
        keys=[Alert.created_at, Alert.id],
        params=params,
        descending=True,
        key_of=lambda a: [a.created_at, a.id],
    )


async def acknowledge(
    session: AsyncSession, caller: Caller, alert_id: str, *, now: datetime
) -> Alert:
    """Mark the alert seen by the caller; acknowledging again changes nothing."""
    alert = await session.scalar(
        select(Alert).where(Alert.id == alert_id, caller.scope(Alert.inbox_id)).with_for_update()
    )
    if alert is None:
        raise NotFound(f"no alert {alert_id}")
    if alert.acknowledged_at is None:
        alert.acknowledged_at = now
        alert.acknowledged_by = caller.user_id
        await session.flush()
    return alert
