from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from inbox_service.core.deps import CurrentCaller, CurrentClock, IfMatch, Session
from inbox_service.core.errors import problems
from inbox_service.core.etag import check_if_match, set_etag
from inbox_service.core.pagination import PageParamsDep
from inbox_service.users import service
from inbox_service.users.models import User
from inbox_service.users.schemas import (
    ApiKeyCreated,
    ApiKeyIn,
    ApiKeyOut,
    ApiKeyPage,
    MeOut,
    UserIn,
    UserOut,
    UserPage,
    UserPatch,
)

router = APIRouter(prefix="/v1", responses=problems(401, 422, 429))


@router.get("/me", response_model=MeOut, tags=["users"])
async def get_me(session: Session, caller: CurrentCaller, response: Response) -> MeOut:
    """The user behind the API key, with the inboxes they belong to."""
    user = await service.get_user(session, caller.user_id)
    set_etag(response, user.version)
    inbox_ids = await service.inbox_ids_of(session, user.id)
    return MeOut(**UserOut.model_validate(user).model_dump(), inbox_ids=inbox_ids)


@router.get("/users", response_model=UserPage, tags=["users"])
async def list_users(session: Session, caller: CurrentCaller, page: PageParamsDep) -> UserPage:
    """Every user of the team (agents see their teammates, e.g. to assign)."""
    users, next_cursor = await service.list_users(session, page)
    return UserPage(items=[UserOut.model_validate(u) for u in users], next_cursor=next_cursor)


@router.post(
    "/users",
    response_model=UserOut,
    status_code=status.HTTP_201_CREATED,
    tags=["users"],
    responses=problems(403, 409),
)
async def create_user(
    body: UserIn, session: Session, caller: CurrentCaller, clock: CurrentClock, response: Response
) -> User:
    """Create a user (admin)."""
    caller.require_admin()
    user = await service.create_user(session, body, now=clock.now())
    response.headers["Location"] = f"/v1/users/{user.id}"
    set_etag(response, user.version)
    return user


@router.get("/users/{user_id}", response_model=UserOut, tags=["users"], responses=problems(404))
async def get_user(
    user_id: str, session: Session, caller: CurrentCaller, response: Response
) -> User:
    """One user."""
    user = await service.get_user(session, user_id)
    set_etag(response, user.version)
    return user


@router.patch(
    "/users/{user_id}",
    response_model=UserOut,
    tags=["users"],
    responses=problems(403, 404, 409, 412),
)
async def update_user(
    user_id: str,
    body: UserPatch,
    session: Session,
    caller: CurrentCaller,
    clock: CurrentClock,
    response: Response,
    if_match: IfMatch = None,
) -> User:
    """Change a user; agents may change their own name and availability."""
    user = await service.get_user(session, user_id)
    service.require_may_update(caller, user, body)  # 403 before 412: no version probing
    check_if_match(if_match, user.version)
    user = await service.update_user(session, caller, user, body, now=clock.now())
    set_etag(response, user.version)
    return user


@router.delete(
    "/users/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    tags=["users"],
    responses=problems(403, 404, 409),
)
async def delete_user(
    user_id: str, session: Session, caller: CurrentCaller, clock: CurrentClock
) -> None:
    """Delete a user (admin): their keys stop working and their memberships end."""
    caller.require_admin()
    user = await service.get_user(session, user_id)
    await service.delete_user(session, user, now=clock.now())


@router.post(
    "/api-keys",
    response_model=ApiKeyCreated,
    status_code=status.HTTP_201_CREATED,
    tags=["api-keys"],
    responses=problems(403, 404),
)
async def create_api_key(
    body: ApiKeyIn, session: Session, caller: CurrentCaller, clock: CurrentClock
) -> ApiKeyCreated:
    """Create an API key; its secret is in this answer only."""
    key, token = await service.create_api_key(session, caller, body, now=clock.now())
    return ApiKeyCreated(**ApiKeyOut.model_validate(key).model_dump(), secret=token)


@router.get("/api-keys", response_model=ApiKeyPage, tags=["api-keys"])
async def list_api_keys(
    session: Session,
    caller: CurrentCaller,
    page: PageParamsDep,
    user_id: Annotated[str | None, Query(description="Only this user's keys (admin).")] = None,
) -> ApiKeyPage:
    """Your API keys (admins: everyone's)."""
    keys, next_cursor = await service.list_api_keys(session, caller, page, user_id=user_id)
    return ApiKeyPage(items=[ApiKeyOut.model_validate(k) for k in keys], next_cursor=next_cursor)


@router.delete(
    "/api-keys/{key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    tags=["api-keys"],
    responses=problems(404),
)
async def revoke_api_key(
    key_id: str, session: Session, caller: CurrentCaller, clock: CurrentClock
) -> None:
    """Revoke an API key at once."""
    await service.revoke_api_key(session, caller, key_id, now=clock.now())
