"""API key → Caller: the authenticator installed on the app, and the cache in front of it.

`CachedAuthenticator` keeps each key's Caller (its user, role and inboxes) for a few seconds
(`auth_cache_seconds`, 5 by default), so most requests skip the lookup. What bounds it:

* a change made through the ORM in this process to api_keys, users, inbox_members or
  inboxes (a revoked key, a deleted user, a new role, a membership) empties it at once: the
  session events below count such changes at flush and again at commit;
* a change made by another process (another replica, another `serve --workers` process,
  psql) is seen within `auth_cache_seconds`;
* `expires_at` is checked on every request, and an entry is not used once the key's
  `last_used_at` is older than LAST_USED_RESOLUTION, so `last_used_at` moves as without it.

Only keys that authenticated are kept; a wrong secret is a different entry (the key is the
secret's hash) and always reaches the database.

Browser session tokens (`sessions/`) are never cached: each request checks them in the
database, so a revoked or expired token fails on the very next request in every process.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from fastapi import Request
from sqlalchemy import event, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import ORMExecuteState
from sqlalchemy.orm import Session as OrmSession

from inbox_service.core.auth import Caller, hash_secret, parse_api_key
from inbox_service.core.clock import Clock
from inbox_service.core.errors import Unauthorized
from inbox_service.inboxes.models import Inbox, InboxMember
from inbox_service.sessions.service import authenticate_token
from inbox_service.sessions.tokens import is_session_token, request_credential
from inbox_service.users.models import ApiKey, User

# last_used_at is a hint for humans; writing it on every request would cost a row update.
LAST_USED_RESOLUTION = timedelta(minutes=1)
# What a Caller is made of: a write to any of these may change or end one.
_AUTH_MODELS: tuple[type[Any], ...] = (ApiKey, User, InboxMember, Inbox)
# Set on the last_used_at update, which changes no Caller.
_CALLER_UNCHANGED = "inbox_caller_unchanged"
_CHANGED = "inbox_auth_changed"


@dataclass(frozen=True)
class _Checked:
    caller: Caller
    expires_at: datetime | None
    last_used_at: datetime


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
    await session.execute(
        update(ApiKey)
        .where(ApiKey.id == stale)
        .values(last_used_at=now)
        .execution_options(**{_CALLER_UNCHANGED: True})
    )


async def _check(session: AsyncSession, key_id: str, secret: str, now: datetime) -> _Checked:
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
    last_used_at = key.last_used_at
    if last_used_at is None or last_used_at < now - LAST_USED_RESOLUTION:
        await _touch(session, key.id, now)
        last_used_at = now
    caller = Caller(
        user_id=key.user_id,
        role="admin" if role == "admin" else "agent",
        inbox_ids=None if role == "admin" else frozenset(inbox_ids or ()),
        key_id=key.id,
    )
    return _Checked(caller, key.expires_at, last_used_at)


def _parsed_key(credential: str) -> tuple[str, str]:
    parsed = parse_api_key(credential)
    if parsed is None:
        raise Unauthorized("malformed API key")
    return parsed


async def authenticate(session: AsyncSession, request: Request) -> Caller:
    """The caller behind the request's bearer key or session token; 401 for a missing, bad,
    expired or revoked one."""
    clock: Clock = request.app.state.clock
    credential = request_credential(request)
    if is_session_token(credential):
        return await authenticate_token(session, credential, clock.now())
    key_id, secret = _parsed_key(credential)
    return (await _check(session, key_id, secret, clock.now())).caller


class _AuthChanges:
    """How many changes to what a Caller is made of this process has flushed or committed."""

    count = 0


@dataclass(frozen=True)
class _Entry:
    checked: _Checked
    changes: int  # _AuthChanges.count before the lookup
    since: datetime
    until: datetime

    def valid(self, now: datetime) -> bool:
        # `since`: a clock set back does not stretch an entry.
        return self.changes == _AuthChanges.count and self.since <= now < self.until


class CachedAuthenticator:
    """`authenticate`, with each key's Caller kept for `ttl` (see the module docstring)."""

    def __init__(self, ttl: timedelta, max_entries: int = 10_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[tuple[str, str], _Entry] = {}

    async def __call__(self, session: AsyncSession, request: Request) -> Caller:
        clock: Clock = request.app.state.clock
        credential = request_credential(request)
        if is_session_token(credential):  # never cached (module docstring)
            return await authenticate_token(session, credential, clock.now())
        key_id, secret = _parsed_key(credential)
        cache_key = (key_id, hash_secret(secret))
        now = clock.now()
        entry = self._entries.get(cache_key)
        if entry is not None and entry.valid(now):
            return entry.checked.caller
        changes = _AuthChanges.count  # read first: a change during the lookup voids it
        checked = await _check(session, key_id, secret, now)
        until = min(now + self.ttl, checked.last_used_at + LAST_USED_RESOLUTION)
        if checked.expires_at is not None:
            until = min(until, checked.expires_at)
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[cache_key] = _Entry(checked, changes, now, until)
        return checked.caller


def _auth_changed(session: OrmSession) -> None:
    _AuthChanges.count += 1
    session.info[_CHANGED] = True


@event.listens_for(OrmSession, "after_flush")
def _count_flushed_changes(session: OrmSession, _context: Any) -> None:
    # Still the pre-flush lists here: what this flush wrote.
    for obj in (*session.new, *session.dirty, *session.deleted):
        if isinstance(obj, _AUTH_MODELS):
            _auth_changed(session)
            return


@event.listens_for(OrmSession, "do_orm_execute")
def _count_statement_changes(state: ORMExecuteState) -> None:
    # ORM insert/update/delete statements (revoke all keys, remove a member); raw SQL is not
    # seen here and takes effect within the cache's ttl, like another process's changes.
    mapper = state.bind_mapper
    if state.is_select or mapper is None or not issubclass(mapper.class_, _AUTH_MODELS):
        return
    if not state.execution_options.get(_CALLER_UNCHANGED, False):
        _auth_changed(state.session)


@event.listens_for(OrmSession, "after_commit")
def _count_committed_changes(session: OrmSession) -> None:
    # Again once committed: a lookup that ran between the flush and the commit read the
    # old rows and must not be kept.
    if session.info.pop(_CHANGED, False):
        _AuthChanges.count += 1
