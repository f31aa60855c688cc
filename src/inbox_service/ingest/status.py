"""Sync bookkeeping: which inboxes to sync, how, and how it went (`/sync-status`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from inbox_service.alerts.service import raise_alert
from inbox_service.core.crypto import CredentialCipher
from inbox_service.core.events import EventType, emit
from inbox_service.inboxes.mail_settings import default_port
from inbox_service.inboxes.models import Inbox, InboxMember
from inbox_service.ingest.imap import ImapError, ImapSettings
from inbox_service.ingest.models import FolderSyncState, InboxSyncState
from inbox_service.ingest.store import InboxContext
from inbox_service.users.models import User

NOTIFY_CHANNEL = "inbox_sync"


@dataclass(frozen=True)
class SyncTarget:
    imap: ImapSettings
    folders: tuple[str, ...]
    poll_seconds: int
    context: InboxContext


def imap_settings_of(
    inbox: Inbox, cipher: CredentialCipher | None, *, timeout: float = 30.0
) -> ImapSettings:
    secret = None
    if inbox.imap_secret_encrypted:
        if cipher is None:
            raise ImapError(
                "auth", "INBOX_SECRET_KEY is not set: stored credentials are unreadable"
            )
        try:
            secret = cipher.decrypt(inbox.imap_secret_encrypted)
        except ValueError as exc:  # INBOX_SECRET_KEY rotated without keeping the old key
            raise ImapError("auth", str(exc)) from exc
    return ImapSettings(
        host=inbox.imap_host or "",
        port=inbox.imap_port or default_port(inbox.imap_security),
        security="ssl"
        if inbox.imap_security == "ssl"
        else ("starttls" if inbox.imap_security == "starttls" else "none"),
        username=inbox.imap_username or "",
        password=secret if inbox.imap_auth == "password" else None,
        oauth2_token=secret if inbox.imap_auth == "xoauth2" else None,
        timeout=timeout,
    )


async def syncable_inbox_ids(session: AsyncSession) -> list[str]:
    rows = await session.scalars(
        select(Inbox.id)
        .where(Inbox.imap_enabled.is_(True), Inbox.imap_host.is_not(None))
        .order_by(Inbox.id)
    )
    return list(rows)


async def inbox_context(session: AsyncSession, inbox: Inbox) -> InboxContext:
    """The inbox's own address and its members' addresses are "the team" for threading."""
    emails = await session.scalars(
        select(func.lower(User.email))
        .join(InboxMember, InboxMember.user_id == User.id)
        .where(InboxMember.inbox_id == inbox.id)
    )
    return InboxContext(
        inbox_id=inbox.id,
        team_addresses=frozenset({inbox.address.lower(), *emails}),
        subject_window=timedelta(days=inbox.subject_threading_days),
    )


async def load_target(
    session: AsyncSession, inbox_id: str, cipher: CredentialCipher | None, *, imap_timeout: float
) -> SyncTarget | None:
    inbox = await session.get(Inbox, inbox_id)
    if inbox is None or not inbox.imap_enabled or not inbox.imap_host:
        return None
    return SyncTarget(
        imap=imap_settings_of(inbox, cipher, timeout=imap_timeout),
        folders=tuple(inbox.imap_folders or ["INBOX"]),
        poll_seconds=inbox.imap_poll_seconds,
        context=await inbox_context(session, inbox),
    )


async def _state(session: AsyncSession, inbox_id: str) -> InboxSyncState:
    await session.execute(
        insert(InboxSyncState)
        .values(inbox_id=inbox_id, consecutive_failures=0)
        .on_conflict_do_nothing()
    )
    return await session.get_one(InboxSyncState, inbox_id, with_for_update=True)


async def record_attempt(
    session: AsyncSession, inbox_id: str, worker_id: str, *, now: datetime
) -> None:
    state = await _state(session, inbox_id)
    state.worker_id = worker_id
    state.last_attempt_at = now
    state.requested_at = None


async def record_success(
    session: AsyncSession, inbox_id: str, results: Sequence[object], *, now: datetime
) -> None:
    state = await _state(session, inbox_id)
    state.last_success_at = now
    state.consecutive_failures = 0
    state.next_attempt_at = None


async def record_failure(
    session: AsyncSession, inbox_id: str, error: Exception, *, now: datetime, alert_at: int
) -> None:
    """Count the failure; the `alert_at`-th in a row raises the event and the alert."""
    if isinstance(error, ImapError):
        reason: str = error.reason
    elif isinstance(error, OSError | TimeoutError):
        reason = "network"
    else:
        reason = "internal"
    message = str(error) or type(error).__name__
    state = await _state(session, inbox_id)
    state.consecutive_failures += 1
    state.last_error = message
    state.last_error_reason = reason
    state.last_error_at = now
    if state.consecutive_failures == alert_at:
        data = {
            "inbox_id": inbox_id,
            "reason": reason,
            "error": message,
            "consecutive_failures": state.consecutive_failures,
        }
        await emit(session, EventType.INBOX_SYNC_FAILED, data, now=now, inbox_id=inbox_id)
        await raise_alert(
            session,
            "sync_failed",
            f"Mail sync keeps failing: {message}",
            now=now,
            inbox_id=inbox_id,
            data=data,
        )


async def request_sync(session: AsyncSession, inbox_id: str, *, now: datetime) -> None:
    """Ask the worker that owns the inbox to sync now (delivered when the caller commits)."""
    state = await _state(session, inbox_id)
    state.requested_at = now
    await session.execute(
        text("SELECT pg_notify(:channel, :inbox)"), {"channel": NOTIFY_CHANNEL, "inbox": inbox_id}
    )


async def notify_changed(session: AsyncSession, inbox_id: str) -> None:
    await session.execute(
        text("SELECT pg_notify(:channel, :inbox)"), {"channel": NOTIFY_CHANNEL, "inbox": inbox_id}
    )


async def sync_status(
    session: AsyncSession, inbox_id: str
) -> tuple[InboxSyncState | None, list[FolderSyncState]]:
    state = await session.get(InboxSyncState, inbox_id)
    folders = await session.scalars(
        select(FolderSyncState)
        .where(FolderSyncState.inbox_id == inbox_id)
        .order_by(FolderSyncState.folder)
    )
    return state, list(folders)
