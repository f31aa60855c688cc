"""Users and API keys."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Select, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from inbox_service.assignment import service as assignment_service
from inbox_service.core.auth import Caller, new_api_key
from inbox_service.core.errors import Conflict, Forbidden, Invalid, NotFound
from inbox_service.core.ids import new_id
from inbox_service.core.pagination import PageParams, keyset_page
from inbox_service.events.hub import notify_credentials_changed
from inbox_service.inboxes.models import InboxMember
from inbox_service.users.models import ApiKey, User
from inbox_service.users.schemas import ApiKeyIn, UserIn, UserPatch

# What an agent may change about themselves; the rest is for admins.
SELF_SERVICE_FIELDS = {"name", "availability"}


def _live_users() -> Select[User]:
    return select(User).where(User.deleted_at.is_(None))


async def _email_taken(session: AsyncSession, email: str, *, except_id: str | None = None) -> bool:
    stmt = select(User.id).where(User.deleted_at.is_(None), func.lower(User.email) == email.lower())
    if except_id is not None:
        stmt = stmt.where(User.id != except_id)
    return await session.scalar(stmt) is not None


async def create_user(session: AsyncSession, data: UserIn, *, now: datetime) -> User:
    """A new user; 409 when a live user already has the address."""
    if await _email_taken(session, data.email):
        raise Conflict(f"a user with email {data.email} exists")
    user = User(id=new_id("usr"), created_at=now, updated_at=now, version=1, **data.model_dump())
    session.add(user)
    try:
        await session.flush()
    except IntegrityError as exc:  # a concurrent create with the same address
        raise Conflict(f"a user with email {data.email} exists") from exc
    return user


async def get_user(session: AsyncSession, user_id: str) -> User:
    user = await session.scalar(_live_users().where(User.id == user_id))
    if user is None:
        raise NotFound(f"no user {user_id}")
    return user


async def inbox_ids_of(session: AsyncSession, user_id: str) -> list[str]:
    rows = await session.scalars(
        select(InboxMember.inbox_id)
        .where(InboxMember.user_id == user_id)
        .order_by(InboxMember.inbox_id)
    )
    return list(rows)


async def list_users(session: AsyncSession, params: PageParams) -> tuple[list[User], str | None]:
    return await keyset_page(
        session, _live_users(), keys=[User.id], params=params, key_of=lambda u: [u.id]
    )


def require_may_update(caller: Caller, user: User, patch: UserPatch) -> None:
    """403 unless the caller is an admin or an agent changing only their own self-service fields."""
    changes = set(patch.model_dump(exclude_unset=True))
    if not caller.is_admin and (user.id != caller.user_id or changes - SELF_SERVICE_FIELDS):
        raise Forbidden("agents may change only their own name and availability")


async def update_user(
    session: AsyncSession, caller: Caller, user: User, patch: UserPatch, *, now: datetime
) -> User:
    """Apply `patch`; agents may only change their own name and availability."""
    require_may_update(caller, user, patch)
    changes = patch.model_dump(exclude_unset=True)
    if any(value is None for value in changes.values()):
        field = next(k for k, v in changes.items() if v is None)
        raise Invalid(f"{field} cannot be null", loc=["body", field])
    if not changes:
        return user  # nothing to change: no new version
    if "email" in changes and await _email_taken(session, changes["email"], except_id=user.id):
        raise Conflict(f"a user with email {changes['email']} exists")
    if changes.get("role") == "agent" and user.role == "admin":
        await _keep_one_admin(session, user)
    for field, value in changes.items():
        setattr(user, field, value)
    user.version += 1
    user.updated_at = now
    try:
        await session.flush()
    except IntegrityError as exc:  # a concurrent change took the address first
        raise Conflict(f"a user with email {changes.get('email')} exists") from exc
    if changes.get("availability") == "available" or "capacity" in changes:
        await assignment_service.wake(session, user_id=user.id, now=now)  # waiting work
    return user


async def _keep_one_admin(session: AsyncSession, leaving: User) -> None:
    # Lock every live admin row: two admins demoting each other at once would otherwise
    # each see the other one still there, and the team would end up with none.
    admins = await session.scalars(
        select(User.id)
        .where(User.role == "admin", User.deleted_at.is_(None))
        .order_by(User.id)
        .with_for_update()
    )
    if not any(admin_id != leaving.id for admin_id in admins):
        raise Conflict("this is the last admin; promote another user first")


async def delete_user(session: AsyncSession, user: User, *, now: datetime) -> None:
    """Soft delete: history keeps the user; keys stop working and memberships end."""
    if user.role == "admin":
        await _keep_one_admin(session, user)
    user.deleted_at = now
    user.updated_at = now
    user.version += 1
    await session.execute(
        update(ApiKey)
        .where(ApiKey.user_id == user.id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    await session.execute(delete(InboxMember).where(InboxMember.user_id == user.id))
    await notify_credentials_changed(session, user.id)  # their open streams end now
    await session.flush()


async def create_api_key(
    session: AsyncSession, caller: Caller, data: ApiKeyIn, *, now: datetime
) -> tuple[ApiKey, str]:
    """A new key and its one-time secret. Admins may create keys for other users."""
    if caller.session_token_id is not None:
        raise Forbidden("a session token cannot create API keys: use an API key")
    owner_id = data.user_id or caller.user_id
    if owner_id != caller.user_id:
        if not caller.is_admin:
            raise Forbidden("only admins create keys for other users")
        await get_user(session, owner_id)
    if data.expires_at is not None and data.expires_at <= now:
        raise Invalid("expires_at must be in the future", loc=["body", "expires_at"])
    fresh = new_api_key()
    key = ApiKey(
        id=new_id("key"),
        user_id=owner_id,
        name=data.name,
        key_id=fresh.key_id,
        secret_hash=fresh.secret_hash,
        created_at=now,
        expires_at=data.expires_at,
    )
    session.add(key)
    await session.flush()
    return key, fresh.token


def _visible_keys(caller: Caller) -> Select[ApiKey]:
    stmt = select(ApiKey)
    return stmt if caller.is_admin else stmt.where(ApiKey.user_id == caller.user_id)


async def list_api_keys(
    session: AsyncSession, caller: Caller, params: PageParams, *, user_id: str | None = None
) -> tuple[list[ApiKey], str | None]:
    stmt = _visible_keys(caller)
    if user_id is not None:
        stmt = stmt.where(ApiKey.user_id == user_id)
    return await keyset_page(
        session, stmt, keys=[ApiKey.id], params=params, key_of=lambda k: [k.id]
    )


async def revoke_api_key(
    session: AsyncSession, caller: Caller, key_id: str, *, now: datetime
) -> None:
    key = await session.scalar(_visible_keys(caller).where(ApiKey.id == key_id))
    if key is None:
        raise NotFound(f"no API key {key_id}")
    if key.revoked_at is None:
        key.revoked_at = now
        await notify_credentials_changed(session, key.user_id)  # its open streams end now
    await session.flush()


async def bootstrap_admin(
    session: AsyncSession, *, email: str, name: str, now: datetime
) -> tuple[User, str]:
    """The admin user with this address (created if missing) and a fresh key for it."""
    user = await session.scalar(_live_users().where(func.lower(User.email) == email.lower()))
    if user is None:
        user = await create_user(session, UserIn(email=email, name=name, role="admin"), now=now)
    elif user.role != "admin":
        raise Conflict(f"{email} exists and is not an admin")
    admin = Caller(user_id=user.id, role="admin", inbox_ids=None)
    _, token = await create_api_key(session, admin, ApiKeyIn(name="create-admin"), now=now)
    return user, token
