from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from inbox_service.core.deps import CurrentCaller, CurrentClock, Session
from inbox_service.core.errors import problems
from inbox_service.sessions import service
from inbox_service.sessions.schemas import SessionTokenCreated, SessionTokenIn

router = APIRouter(
    prefix="/v1/session-tokens", tags=["session-tokens"], responses=problems(401, 422, 429)
)


@router.post(
    "",
    response_model=SessionTokenCreated,
    status_code=status.HTTP_201_CREATED,
    responses=problems(403, 404),
)
async def create_session_token(
    body: SessionTokenIn, session: Session, caller: CurrentCaller, clock: CurrentClock
) -> SessionTokenCreated:
    """Mint a short-lived token for a browser: it acts as its user, with the same role and
    inboxes. Admin keys mint for any user, other keys for their own user; a session token
    mints nothing (403)."""
    stored, token = await service.mint(session, caller, body, now=clock.now())
    return SessionTokenCreated(token=token, user_id=stored.user_id, expires_at=stored.expires_at)


@router.delete("", status_code=status.HTTP_204_NO_CONTENT, responses=problems(403, 404))
async def revoke_session_tokens(
    session: Session,
    caller: CurrentCaller,
    clock: CurrentClock,
    user_id: Annotated[
        str | None, Query(description="Revoke this user's tokens (admin); default: your own.")
    ] = None,
) -> None:
    """Revoke every session token of a user at once; their open event streams close."""
    await service.revoke_all(session, caller, user_id, now=clock.now())
