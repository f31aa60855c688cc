from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from inbox_service.conversations import queries, service
from inbox_service.conversations.schemas import (
    ConversationDetailOut,
    ConversationOut,
    ConversationPage,
    ConversationPatch,
    MessagePage,
    Priority,
    SlaFilter,
    Sort,
    Status,
    TimelinePage,
)
from inbox_service.core.deps import CurrentCaller, CurrentClock, IfMatch, Session, reading
from inbox_service.core.errors import problems
from inbox_service.core.etag import check_if_match, set_etag
from inbox_service.core.pagination import PageParamsDep
from inbox_service.presence import service as presence_service

router = APIRouter(
    prefix="/v1/conversations", tags=["conversations"], responses=problems(401, 422, 429)
)


@router.get("", response_model=ConversationPage)
async def list_conversations(
    request: Request,
    clock: CurrentClock,
    page: PageParamsDep,
    inbox_id: str | None = None,
    status: Annotated[list[Status] | None, Query(description="Repeat for several.")] = None,
    assignee_id: Annotated[
        str | None, Query(max_length=40, description="A user id, `me` or `none`.")
    ] = None,
    priority: Annotated[list[Priority] | None, Query(description="Repeat for several.")] = None,
    tag: Annotated[str | None, Query(max_length=64)] = None,
    contact_id: str | None = None,
    q: Annotated[
        str | None,
        Query(min_length=1, max_length=200, description="Words in subjects, bodies, addresses."),
    ] = None,
    sla: Annotated[
        SlaFilter | None,
        Query(description="at_risk: inside a warning lead; breached: past an SLA due time."),
    ] = None,
    sort: Annotated[
        Sort,
        Query(
            description="newest / oldest (last activity), waiting_longest (on us), "
            "priority (then waiting time), sla_due (earliest SLA due time first)."
        ),
    ] = "newest",
) -> Response:
    """The conversations you can see, filtered and sorted, a page at a time."""
    filters = queries.Filters(
        inbox_id=inbox_id,
        status=tuple(status or ()),
        assignee=assignee_id,
        priority=tuple(priority or ()),
        tag=tag,
        contact_id=contact_id,
        q=q,
        sla=sla,
    )
    now = clock.now()
    async with reading(request) as (session, caller):
        rows, next_cursor = await queries.list_conversations(
            session, caller, filters, sort, page, now=now
        )
        # Rendered straight from the rows (validating 50 models cost more than the
        # query); `response_model` still documents the shape.
        body = await service.conversation_page_json(session, rows, next_cursor, now=now)
    return Response(body, media_type="application/json")


@router.get("/{conversation_id}", response_model=ConversationDetailOut, responses=problems(404))
async def get_conversation(
    conversation_id: str,
    session: Session,
    caller: CurrentCaller,
    clock: CurrentClock,
    response: Response,
) -> ConversationDetailOut:
    """One conversation, with who is viewing and composing in it now."""
    conversation = await service.get_visible_conversation(session, caller, conversation_id)
    set_etag(response, conversation.version)
    out = await service.conversation_out(session, conversation, now=clock.now())
    return await presence_service.with_presence(session, out, now=clock.now())


@router.patch("/{conversation_id}", response_model=ConversationOut, responses=problems(404, 412))
async def update_conversation(
    conversation_id: str,
    body: ConversationPatch,
    session: Session,
    caller: CurrentCaller,
    clock: CurrentClock,
    response: Response,
    if_match: IfMatch = None,
) -> ConversationOut:
    """Change status (open, pending, snoozed with `snoozed_until`, resolved) or priority."""
    conversation = await service.get_visible_conversation(
        session, caller, conversation_id, for_update=True
    )
    check_if_match(if_match, conversation.version)
    conversation = await service.update_conversation(
        session, conversation, body, actor_id=caller.user_id, now=clock.now()
    )
    set_etag(response, conversation.version)
    return await service.conversation_out(session, conversation, now=clock.now())


@router.get(
    "/{conversation_id}/messages",
    response_model=MessagePage,
    response_model_by_alias=True,
    responses=problems(404),
)
async def list_conversation_messages(
    conversation_id: str, session: Session, caller: CurrentCaller, page: PageParamsDep
) -> MessagePage:
    """The conversation's messages, oldest first."""
    conversation = await service.get_visible_conversation(session, caller, conversation_id)
    messages, next_cursor = await service.list_messages(session, conversation, page)
    return MessagePage(
        items=[service.message_summary_out(m) for m in messages], next_cursor=next_cursor
    )


@router.get("/{conversation_id}/timeline", response_model=TimelinePage, responses=problems(404))
async def get_conversation_timeline(
    conversation_id: str, session: Session, caller: CurrentCaller, page: PageParamsDep
) -> TimelinePage:
    """Messages, notes and activity (status, priority, tags, assignment, rules, SLA) in
    order, each with its time and actor."""
    conversation = await service.get_visible_conversation(session, caller, conversation_id)
    entries, next_cursor = await service.timeline(session, conversation, page)
    return TimelinePage(items=entries, next_cursor=next_cursor)
