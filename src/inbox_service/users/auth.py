"""API key → Caller: the authenticator installed on the app."""

from __future__ import annotations

import hmac
from datetime import datetime, timedelta

from fastapi import Request
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from inbox_service.core.auth import Caller, bearer_token, hash_secret, parse_api_key
from inbox_service.core.clock import Clock
from inbox_service.core.errors import Unauthorized
from inbox_service.inboxes.models import InboxMember
from inbox_service.users.models import ApiKey, User

# last_used_at is a hint for humans; writing it on every request would cost a row update.
LAST_USED_RESOLUTION = timedelta(minutes=1)


async def _touch(session: AsyncSession, key_id: str, now: datetime) -> None:
    """Record use, in the request's own transaction and without ever waiting: a key row
    locked by another request (a long SSE stream, say) is skipped, since that request is
    recording the use already. (A second connection here could exhaust the pool: every
    request would hold one and wait for another.)"""
    stale = (
        select(ApiKey.id)
        .where(ApiKey.id == key_id)
        .where((ApiKey.last_used_at.is_(None)) | (ApiKey.last_used_at < now - LAST_USED_RESOLUTION))
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    await session.execute(update(ApiKey).where(ApiKey.id == stale).values(last_used_at=now))


async def authenticate(session: AsyncSession, request: Request) -> Caller:
    """The caller behind the request's bearer key; 401 for a missing, bad or revoked key."""
    clock: Clock = request.app.state.clock
    parsed = parse_api_key(bearer_token(request))
    if parsed is None:
        raise Unauthorized("malformed API key")
    key_id, secret = parsed
    now = clock.now()
    memberships = (
        select(func.array_agg(InboxMember.inbox_id))
        .where(InboxMember.user_id == User.id)
        .scalar_subquery()
    )
    row = (
        await session.execute(
            select(ApiKey, User.role, memberships)
            .join(User, User.id == ApiKey.user_id)
            .where(ApiKey.key_id == key_id, User.deleted_at.is_(None))
        )
    ).one_or_none()
    if row is None:
        raise Unauthorized("unknown API key")
    key, role, inbox_ids = row
    if not hmac.compare_digest(key.secret_hash, hash_secret(secret)):
        raise Unauthorized("unknown API key")
    if key.revoked_at is not None:
        raise Unauthorized("this API key was revoked")
    if key.expires_at is not None and key.expires_at <= now:
        raise Unauthorized("this API key has expired")
    if key.last_used_at is None or key.last_used_at < now - LAST_USED_RESOLUTION:
        await _touch(session, key.id, now)
    return Caller(
        user_id=key.user_id,
        role="admin" if role == "admin" else "agent",
        inbox_ids=None if role == "admin" else frozenset(inbox_ids or ()),
        key_id=key.id,
    )
