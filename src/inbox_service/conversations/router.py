from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from inbox_service.conversations import queries, service
from inbox_service.conversations.schemas import (
    ConversationDetailOut,
    ConversationListQuery,
    ConversationOut,
    ConversationPage,
    ConversationPatch,
    MessagePage,
    TimelinePage,
)
from inbox_service.core.deps import (
    CurrentCaller,
    CurrentClock,
    IfMatch,
    Session,
    clock_of,
    reading,
)
from inbox_service.core.errors import problems
from inbox_service.core.etag import check_if_match, set_etag
from inbox_service.core.pagination import PageParams, PageParamsDep
from inbox_service.presence import service as presence_service

router = APIRouter(
    prefix="/v1/conversations", tags=["conversations"], responses=problems(401, 422, 429)
)


@router.get("", response_model=ConversationPage)
async def list_conversations(
    request: Request, query: Annotated[ConversationListQuery, Query()]
) -> Response:
    """The conversations you can see, filtered and sorted, a page at a time."""
    filters = queries.Filters(
        inbox_id=query.inbox_id,
        status=tuple(query.status or ()),
        assignee=query.assignee_id,
        priority=tuple(query.priority or ()),
        tag=query.tag,
        contact_id=query.contact_id,
        q=query.q,
        sla=query.sla,
    )
    page = PageParams(limit=query.limit, cursor=query.cursor)
    now = clock_of(request).now()
    async with reading(request) as (session, caller):
        rows, next_cursor = await queries.list_conversations(
            session, caller, filters, query.sort, page, now=now
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
