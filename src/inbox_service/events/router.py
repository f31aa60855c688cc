from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from inbox_service.core.deps import CurrentCaller, Session
from inbox_service.core.errors import Invalid, problems
from inbox_service.core.events import EventType
from inbox_service.core.pagination import MAX_LIMIT
from inbox_service.events import service
from inbox_service.events.schemas import EventFeed, EventOut

router = APIRouter(prefix="/v1/events", tags=["events"], responses=problems(401, 422, 429))


@router.get("", response_model=EventFeed)
async def list_events(
    session: Session,
    caller: CurrentCaller,
    after: Annotated[
        str | None, Query(max_length=512, description="`next_cursor` of the previous call.")
    ] = None,
    types: Annotated[
        str | None,
        Query(
            max_length=2000,
            description="Comma-separated event types to keep, e.g. "
            "`conversation.assigned,sla.breached`; default: all.",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
) -> EventFeed:
    """Events in commit-safe order; polling with `after` never skips one."""
    wanted = [t.strip() for t in (types or "").split(",") if t.strip()]
    unknown = sorted(set(wanted) - {t.value for t in EventType})
    if unknown:
        raise Invalid(f"unknown event types: {', '.join(unknown)}", loc=["query", "types"])
    page = await service.read_feed(session, caller, after=after, types=wanted, limit=limit)
    return EventFeed(items=[EventOut.of(e) for e in page.events], next_cursor=page.next_cursor)
