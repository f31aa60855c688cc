"""Minting, checking and revoking session tokens.

A token acts as its user with the user's role and inbox scoping, read afresh on every
request: tokens never go through the API-key cache (`users.auth`), so a revocation, the
user's deletion or a membership change counts on the very next request, in any process.
Revoking also sends a NOTIFY that makes the open event streams of that user re-check their
credential at once (`events.hub`), so a revoked token's stream closes within moments.
"""

from __future__ import annotations

import hmac
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from inbox_service.core.auth import Caller, hash_secret
from inbox_service.core.errors import Forbidden, Unauthorized
from inbox_service.core.ids import new_id
from inbox_service.events.hub import notify_credentials_changed
from inbox_service.inboxes.models import InboxMember
from inbox_service.sessions.models import SessionToken
from inbox_service.sessions.schemas import SessionTokenIn
from inbox_service.sessions.tokens import new_token, parse_token
from inbox_service.users.models import User
from inbox_service.users.service import get_user

# Expired rows are kept a while (so the 401 can say "expired"), then pruned at the next mint.
KEEP_EXPIRED = timedelta(days=1)


class SessionTokenExpired(Unauthorized):
    slug = "session-token-expired"
    title = "Session token expired"


class SessionTokenRevoked(Unauthorized):
    slug = "session-token-revoked"
    title = "Session token revoked"


async def authenticate_token(session: AsyncSession, token: str, now: datetime) -> Caller:
    """The Caller behind a session token; 401 (saying why) when it does not work."""
    parsed = parse_token(token)
    if parsed is None:
        raise Unauthorized("malformed session token")
    token_id, secret = parsed
    memberships = (
        select(func.array_agg(InboxMember.inbox_id))
        .where(InboxMember.user_id == User.id)
        .scalar_subquery()
    )
    row = (
        await session.execute(
            select(SessionToken, User.role, User.deleted_at, memberships)
            .join(User, User.id == SessionToken.user_id)
            .where(SessionToken.token_id == token_id)
        )
    ).one_or_none()
    if row is None:
        raise Unauthorized("unknown session token")
    stored, role, deleted_at, inbox_ids = row
    if not hmac.compare_digest(stored.secret_hash, hash_secret(secret)):
        raise Unauthorized("unknown session token")
    if deleted_at is not None:
        raise SessionTokenRevoked("this session token's user was deleted")
    if stored.revoked_at is not None:
        raise SessionTokenRevoked("this session token was revoked")
    if stored.expires_at <= now:
        raise SessionTokenExpired("this session token has expired: mint a new one")
    return Caller(
        user_id=stored.user_id,
        role="admin" if role == "admin" else "agent",
        inbox_ids=None if role == "admin" else frozenset(inbox_ids or ()),
        session_token_id=stored.id,
    )


def _require_key(caller: Caller, what: str) -> None:
    if caller.session_token_id is not None:
        raise Forbidden(f"a session token cannot {what}: use an API key")


async def mint(
    session: AsyncSession, caller: Caller, data: SessionTokenIn, *, now: datetime
) -> tuple[SessionToken, str]:
    """A new token for `data.user_id` (admins) or the caller's own user, and its secret."""
    _require_key(caller, "mint session tokens")
    owner_id = data.user_id or caller.user_id
    if owner_id != caller.user_id:
        if not caller.is_admin:
            raise Forbidden("only admin keys mint session tokens for other users")
        await get_user(session, owner_id)  # 404 for an unknown or deleted user
    await session.execute(
        delete(SessionToken).where(
            SessionToken.user_id == owner_id, SessionToken.expires_at < now - KEEP_EXPIRED
        )
    )
    token_id, secret, token = new_token()
    stored = SessionToken(
        id=new_id("stk"),
        user_id=owner_id,
        token_id=token_id,
        secret_hash=hash_secret(secret),
        created_at=now,
        expires_at=now + timedelta(seconds=data.ttl_seconds),
    )
    session.add(stored)
    await session.flush()
    return stored, token


async def revoke_all(
    session: AsyncSession, caller: Caller, user_id: str | None, *, now: datetime
) -> int:
    """Revoke every live token of `user_id` (admins) or of the caller's user; how many."""
    target = user_id or caller.user_id
    if target != caller.user_id:
        if not caller.is_admin:
            raise Forbidden("only admins revoke another user's session tokens")
        await get_user(session, target)
    result = await session.execute(
        update(SessionToken)
        .where(
            SessionToken.user_id == target,
            SessionToken.revoked_at.is_(None),
            SessionToken.expires_at > now,
        )
        .values(revoked_at=now)
    )
    # At commit: the user's open streams re-check their credential now, not in a minute.
    await notify_credentials_changed(session, target)
    return int(getattr(result, "rowcount", 0) or 0)
