"""What the API does with ingest: sync requests, status, connection tests, quarantine."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from inbox_service.conversations.models import Message
from inbox_service.core.crypto import CredentialCipher
from inbox_service.core.errors import Conflict
from inbox_service.core.pagination import PageParams, keyset_page
from inbox_service.inboxes.mail_settings import ImapSettingsIn, default_port, may_reuse_secret
from inbox_service.inboxes.models import Inbox
from inbox_service.ingest import imap, status
from inbox_service.ingest.schemas import (
    FolderCheck,
    FolderStatusOut,
    SyncError,
    SyncStatusOut,
    TestConnectionOut,
)


def _require_imap(inbox: Inbox) -> None:
    if not inbox.imap_host:
        raise Conflict("this inbox has no IMAP settings")


async def request_sync(session: AsyncSession, inbox: Inbox, *, now: datetime) -> None:
    _require_imap(inbox)
    if not inbox.imap_enabled:
        raise Conflict("syncing is disabled for this inbox (imap.enabled is false)")
    await status.request_sync(session, inbox.id, now=now)


async def settings_changed(session: AsyncSession, inbox_id: str) -> None:
    """Wake the inbox's worker (or any, to claim it) once the caller commits."""
    await status.notify_changed(session, inbox_id)


async def sync_status(session: AsyncSession, inbox: Inbox) -> SyncStatusOut:
    state, folders = await status.sync_status(session, inbox.id)
    error = None
    # the streak counter, not timestamps, says whether the last attempt failed: two workers'
    # clocks (or one coarse clock) can put a later success at or before the last error
    failing = state is not None and state.consecutive_failures > 0
    if failing and state and state.last_error and state.last_error_at:
        error = SyncError(reason=state.last_error_reason or "network", message=state.last_error,
                          at=state.last_error_at)  # fmt: skip
    return SyncStatusOut(
        inbox_id=inbox.id,
        enabled=bool(inbox.imap_enabled and inbox.imap_host),
        worker_id=state.worker_id if state else None,
        requested_at=state.requested_at if state else None,
        last_attempt_at=state.last_attempt_at if state else None,
        last_success_at=state.last_success_at if state else None,
        consecutive_failures=state.consecutive_failures if state else 0,
        last_error=error,
        folders=[FolderStatusOut.model_validate(f) for f in folders],
    )


TEST_CONNECTION_TIMEOUT = 15.0
"""The most a connection test waits for any one step: a person is waiting on the answer."""


async def test_connection(
    inbox: Inbox,
    candidate: ImapSettingsIn | None,
    cipher: CredentialCipher | None,
    *,
    timeout: float,  # noqa: ASYNC109 (per IMAP step, not overall)
) -> TestConnectionOut:
    """Connect, log in and examine each folder; report the first failure. Saves nothing.

    `timeout` bounds each network step (connect, greeting, login, EXAMINE)."""
    try:
        if candidate is None:
            _require_imap(inbox)
            settings = status.imap_settings_of(inbox, cipher)
            folders = list(inbox.imap_folders or ["INBOX"])
        else:
            secret = candidate.secret.get_secret_value() if candidate.secret else None
            if secret is None and may_reuse_secret(inbox, candidate):
                stored = status.imap_settings_of(inbox, cipher)
                secret = stored.password or stored.oauth2_token
            settings = imap.ImapSettings(
                host=candidate.host,
                port=candidate.port or default_port(candidate.security),
                security=candidate.security,
                username=candidate.username,
                password=secret if candidate.auth == "password" else None,
                oauth2_token=secret if candidate.auth == "xoauth2" else None,
            )
            folders = list(candidate.folders)
        results = await imap.test_connection(replace(settings, timeout=timeout), folders)
    except imap.ImapError as exc:
        return TestConnectionOut(ok=False, reason=exc.reason, message=exc.message, folders=[])
    return TestConnectionOut(
        ok=True,
        reason=None,
        message=None,
        folders=[
            FolderCheck(folder=name, uidvalidity=r.uidvalidity, messages=r.exists)
            for name, r in zip(folders, results, strict=True)
        ],
    )


async def list_quarantine(
    session: AsyncSession, inbox: Inbox, params: PageParams
) -> tuple[list[Message], str | None]:
    stmt = select(Message).where(Message.inbox_id == inbox.id, Message.conversation_id.is_(None))
    return await keyset_page(session, stmt, keys=[Message.id], params=params,
                             key_of=lambda m: [m.id])  # fmt: skip
