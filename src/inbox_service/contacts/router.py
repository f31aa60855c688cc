from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from inbox_service.contacts import service
from inbox_service.contacts.schemas import ContactOut, ContactPage, ContactPatch
from inbox_service.conversations import queries
from inbox_service.conversations import service as conversations_service
from inbox_service.conversations.schemas import ConversationPage, Sort
from inbox_service.core.deps import CurrentCaller, CurrentClock, IfMatch, Session, reading
from inbox_service.core.errors import problems
from inbox_service.core.etag import check_if_match, set_etag
from inbox_service.core.pagination import PageParamsDep

router = APIRouter(prefix="/v1/contacts", tags=["contacts"], responses=problems(401, 422, 429))


@router.get("", response_model=ContactPage)
async def list_contacts(
    session: Session,
    caller: CurrentCaller,
    page: PageParamsDep,
    q: Annotated[
        str | None, Query(min_length=1, max_length=200, description="Address or name prefix.")
    ] = None,
) -> ContactPage:
    """Contacts with conversations in your inboxes (admins: all)."""
    rows, next_cursor = await service.list_contacts(session, caller, page, q=q)
    return ContactPage(items=[ContactOut.model_validate(c) for c in rows], next_cursor=next_cursor)


@router.get("/{contact_id}", response_model=ContactOut, responses=problems(404))
async def get_contact(
    contact_id: str, session: Session, caller: CurrentCaller, response: Response
) -> ContactOut:
    """One contact."""
    contact = await service.get_visible(session, caller, contact_id)
    set_etag(response, contact.version)
    return ContactOut.model_validate(contact)


@router.patch("/{contact_id}", response_model=ContactOut, responses=problems(404, 412))
async def update_contact(
    contact_id: str,
    body: ContactPatch,
    session: Session,
    caller: CurrentCaller,
    clock: CurrentClock,
    response: Response,
    if_match: IfMatch = None,
) -> ContactOut:
    """Change a contact's display name (ingest never overwrites it afterwards)."""
    contact = await service.get_visible(session, caller, contact_id)
    check_if_match(if_match, contact.version)
    contact = await service.rename(session, contact, body.name, now=clock.now())
    set_etag(response, contact.version)
    return ContactOut.model_validate(contact)


@router.get("/{contact_id}/conversations", response_model=ConversationPage, responses=problems(404))
async def list_contact_conversations(
    contact_id: str,
    request: Request,
    clock: CurrentClock,
    page: PageParamsDep,
    sort: Sort = "newest",
) -> Response:
    """The contact's conversations in your inboxes."""
    async with reading(request) as (session, caller):
        contact = await service.get_visible(session, caller, contact_id)
        filters = queries.Filters(contact_id=contact.id)
        rows, next_cursor = await queries.list_conversations(session, caller, filters, sort, page)
        body = await conversations_service.conversation_page_json(
            session, rows, next_cursor, now=clock.now()
        )
    return Response(body, media_type="application/json")
