from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from inbox_service.alerts import service
from inbox_service.alerts.models import Alert
from inbox_service.alerts.schemas import AlertOut, AlertPage
from inbox_service.core.deps import CurrentCaller, CurrentClock, Session
from inbox_service.core.errors import problems
from inbox_service.core.pagination import PageParamsDep

router = APIRouter(prefix="/v1/alerts", tags=["alerts"], responses=problems(401, 422, 429))


def _out(alert: Alert) -> AlertOut:
    return AlertOut.model_validate(alert, from_attributes=True)


@router.get("", response_model=AlertPage)
async def list_alerts(
    session: Session,
    caller: CurrentCaller,
    page: PageParamsDep,
    kind: Annotated[
        list[str] | None,
        Query(description="Repeat for several: sla_warning, sla_breached, snooze_ended, …"),
    ] = None,
    inbox_id: Annotated[str | None, Query(max_length=40)] = None,
    acknowledged: Annotated[
        bool | None, Query(description="false: only open alerts; true: only acknowledged.")
    ] = None,
) -> AlertPage:
    """Alerts of the inboxes you can see, newest first."""
    alerts, next_cursor = await service.list_alerts(
        session, caller, page, kinds=kind or (), inbox_id=inbox_id, acknowledged=acknowledged
    )
    return AlertPage(items=[_out(a) for a in alerts], next_cursor=next_cursor)


@router.post("/{alert_id}/acknowledge", response_model=AlertOut, responses=problems(404))
async def acknowledge_alert(
    alert_id: str, session: Session, caller: CurrentCaller, clock: CurrentClock
) -> AlertOut:
    """Mark an alert as seen (by you); doing it again keeps the first acknowledgement."""
    return _out(await service.acknowledge(session, caller, alert_id, now=clock.now()))
