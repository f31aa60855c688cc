from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response

from inbox_service.core.deps import CurrentCaller, Session
from inbox_service.core.errors import Invalid, problems
from inbox_service.core.events import EventType
from inbox_service.core.pagination import MAX_LIMIT
from inbox_service.events import service
from inbox_service.events.schemas import EventFeed, EventOut
from inbox_service.events.stream import MEDIA_TYPE, EventStreamResponse, event_stream
from inbox_service.sessions.deps import QueryTokenCaller

router = APIRouter(prefix="/v1/events", tags=["events"], responses=problems(401, 422, 429))

TypesQuery = Annotated[
    str | None,
    Query(
        max_length=2000,
        description="Comma-separated event types to keep, e.g. "
        "`conversation.assigned,sla.breached`; default: all.",
    ),
]


def _wanted_types(types: str | None) -> list[str]:
    wanted = [t.strip() for t in (types or "").split(",") if t.strip()]
    unknown = sorted(set(wanted) - {t.value for t in EventType})
    if unknown:
        raise Invalid(f"unknown event types: {', '.join(unknown)}", loc=["query", "types"])
    return wanted


@router.get("", response_model=EventFeed)
async def list_events(
    session: Session,
    caller: CurrentCaller,
    after: Annotated[
        str | None, Query(max_length=512, description="`next_cursor` of the previous call.")
    ] = None,
    types: TypesQuery = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
) -> EventFeed:
    """Events in commit-safe order; polling with `after` never skips one."""
    wanted = _wanted_types(types)
    page = await service.read_feed(session, caller, after=after, types=wanted, limit=limit)
    return EventFeed(items=[EventOut.of(e) for e in page.events], next_cursor=page.next_cursor)


# What each message of the stream looks like (OpenAPI 3.2's `itemSchema` for SSE).
_STREAM_ITEM: dict[str, Any] = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "id": {
            "type": "string",
            "description": "A feed cursor just after this event (absent on ephemeral events).",
        },
        "event": {"type": "string", "description": "The event type."},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {"$ref": "#/components/schemas/EventOut"},
        },
        "retry": {"type": "integer", "minimum": 0},
    },
}

_STREAM_DESCRIPTION = """\
Server-Sent Events: first `retry: 2000` with the starting `id:`; then, per event, \
`id: <cursor>` (a feed cursor just after it: send it back as `Last-Event-ID` to resume \
with no gap and no duplicate), `event: <type>` and `data: <the feed's event JSON>`. \
`presence.changed` comes with no `id:` (not stored, not resumable). \
A `: keep-alive` comment is sent when idle."""


@router.get(
    "/stream",
    # The endpoint returns its own EventStreamResponse; `Response` here keeps the problem
    # answers documented as problem+json only (as for the other non-JSON routes).
    response_class=Response,
    response_description=_STREAM_DESCRIPTION,
    responses={
        200: {"content": {MEDIA_TYPE: {"schema": {"type": "string"}, "itemSchema": _STREAM_ITEM}}}
    },
)
async def stream_events(
    request: Request,
    session: Session,
    caller: QueryTokenCaller,
    types: TypesQuery = None,
    last_event_id: Annotated[
        str | None,
        Query(
            max_length=512,
            description="Where to resume, for clients that cannot send `Last-Event-ID` "
            "(the header wins when both are sent).",
        ),
    ] = None,
    last_event_id_header: Annotated[
        str | None,
        Header(
            alias="Last-Event-ID",
            max_length=512,
            description="The last `id:` received: the stream resumes right after it. "
            "Without it, the stream starts now.",
        ),
    ] = None,
) -> EventStreamResponse:
    """The event log, live (Server-Sent Events), scoped and filtered like the feed. Browsers
    authenticate with `?access_token=<session token>` (`EventSource` sends no headers)."""
    wanted = _wanted_types(types)
    if last_event_id_header:
        cursor = service.check_cursor(last_event_id_header, ["header", "Last-Event-ID"])
    elif last_event_id:
        cursor = service.check_cursor(last_event_id, ["query", "last_event_id"])
    else:
        cursor = await service.current_cursor(session)
    return EventStreamResponse(event_stream(request, caller=caller, cursor=cursor, types=wanted))
