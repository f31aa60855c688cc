from __future__ import annotations

from fastapi import APIRouter, Response, status

from inbox_service.core.crypto import cipher_from
from inbox_service.core.deps import CurrentCaller, CurrentClock, CurrentSettings, IfMatch, Session
from inbox_service.core.errors import problems
from inbox_service.core.etag import check_if_match, set_etag
from inbox_service.core.pagination import PageParamsDep
from inbox_service.inboxes import service
from inbox_service.inboxes.models import Inbox, InboxMember
from inbox_service.inboxes.schemas import InboxIn, InboxMemberOut, InboxOut, InboxPage, InboxPatch

router = APIRouter(prefix="/v1/inboxes", tags=["inboxes"], responses=problems(401, 422, 429))


@router.get("", response_model=InboxPage)
async def list_inboxes(session: Session, caller: CurrentCaller, page: PageParamsDep) -> InboxPage:
    """The inboxes you can see (admins: all)."""
    inboxes, next_cursor = await service.list_inboxes(session, caller, page)
    return InboxPage(items=[InboxOut.model_validate(i) for i in inboxes], next_cursor=next_cursor)


@router.post(
    "", response_model=InboxOut, status_code=status.HTTP_201_CREATED, responses=problems(403)
)
async def create_inbox(
    body: InboxIn,
    session: Session,
    caller: CurrentCaller,
    clock: CurrentClock,
    settings: CurrentSettings,
    response: Response,
) -> Inbox:
    """Create an inbox (admin)."""
    caller.require_admin()
    inbox = await service.create_inbox(
        session, body, now=clock.now(), cipher=cipher_from(settings.inbox_secret_key)
    )
    response.headers["Location"] = f"/v1/inboxes/{inbox.id}"
    set_etag(response, inbox.version)
    return inbox


@router.get("/{inbox_id}", response_model=InboxOut, responses=problems(404))
async def get_inbox(
    inbox_id: str, session: Session, caller: CurrentCaller, response: Response
) -> Inbox:
    """One inbox."""
    inbox = await service.get_visible(session, caller, inbox_id)
    set_etag(response, inbox.version)
    return inbox


@router.patch("/{inbox_id}", response_model=InboxOut, responses=problems(403, 404, 412))
async def update_inbox(
    inbox_id: str,
    body: InboxPatch,
    session: Session,
    caller: CurrentCaller,
    clock: CurrentClock,
    settings: CurrentSettings,
    response: Response,
    if_match: IfMatch = None,
) -> Inbox:
    """Change an inbox (admin). IMAP `secret` is write-only: omit it to keep the stored one."""
    inbox = await service.get_visible(session, caller, inbox_id)
    caller.require_admin()
    check_if_match(if_match, inbox.version)
    inbox = await service.update_inbox(
        session, inbox, body, now=clock.now(), cipher=cipher_from(settings.inbox_secret_key)
    )
    set_etag(response, inbox.version)
    return inbox


@router.delete("/{inbox_id}", status_code=status.HTTP_204_NO_CONTENT, responses=problems(403, 404))
async def delete_inbox(
    inbox_id: str, session: Session, caller: CurrentCaller, clock: CurrentClock
) -> None:
    """Delete an inbox and everything in it (admin)."""
    inbox = await service.get_visible(session, caller, inbox_id)
    caller.require_admin()
    await service.delete_inbox(session, inbox, now=clock.now())


@router.get("/{inbox_id}/members", response_model=list[InboxMemberOut], responses=problems(404))
async def list_inbox_members(
    inbox_id: str, session: Session, caller: CurrentCaller
) -> list[InboxMember]:
    """Who belongs to the inbox."""
    inbox = await service.get_visible(session, caller, inbox_id)
    return await service.list_members(session, inbox)


@router.put(
    "/{inbox_id}/members/{user_id}",
    response_model=InboxMemberOut,
    responses={**problems(403, 404), 201: {"model": InboxMemberOut, "description": "Added"}},
)
async def add_inbox_member(
    inbox_id: str,
    user_id: str,
    session: Session,
    caller: CurrentCaller,
    clock: CurrentClock,
    response: Response,
) -> InboxMember:
    """Make a user a member of the inbox (admin); 201 when added, 200 when already one."""
    inbox = await service.get_visible(session, caller, inbox_id)
    caller.require_admin()
    member, created = await service.add_member(session, inbox, user_id, now=clock.now())
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    return member


@router.delete(
    "/{inbox_id}/members/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problems(403, 404),
)
async def remove_inbox_member(
    inbox_id: str, user_id: str, session: Session, caller: CurrentCaller, clock: CurrentClock
) -> None:
    """Remove a user from the inbox (admin)."""
    inbox = await service.get_visible(session, caller, inbox_id)
    caller.require_admin()
    await service.remove_member(session, inbox, user_id, now=clock.now())
