from __future__ import annotations

from fastapi import APIRouter, status

from inbox_service.core.crypto import cipher_from
from inbox_service.core.db import end_before_network_io
from inbox_service.core.deps import CurrentCaller, CurrentClock, CurrentSettings, Session
from inbox_service.core.errors import problems
from inbox_service.core.pagination import PageParamsDep
from inbox_service.inboxes import service as inboxes_service
from inbox_service.ingest import service
from inbox_service.ingest.schemas import (
    QuarantinedMessageOut,
    QuarantinePage,
    SyncRequested,
    SyncStatusOut,
    TestConnectionIn,
    TestConnectionOut,
)

router = APIRouter(prefix="/v1/inboxes", tags=["inboxes"], responses=problems(401, 404, 422, 429))


@router.post("/{inbox_id}/sync", response_model=SyncRequested,
             status_code=status.HTTP_202_ACCEPTED, responses=problems(409))  # fmt: skip
async def sync_inbox(
    inbox_id: str, session: Session, caller: CurrentCaller, clock: CurrentClock
) -> SyncRequested:
    """Ask for the inbox's mail to be fetched now (the worker that owns it is woken)."""
    inbox = await inboxes_service.get_visible(session, caller, inbox_id)
    now = clock.now()
    await service.request_sync(session, inbox, now=now)
    return SyncRequested(inbox_id=inbox.id, requested_at=now)


@router.get("/{inbox_id}/sync-status", response_model=SyncStatusOut)
async def get_sync_status(inbox_id: str, session: Session, caller: CurrentCaller) -> SyncStatusOut:
    """Per folder: UIDVALIDITY, last UID stored, last success; and the last error, if any."""
    inbox = await inboxes_service.get_visible(session, caller, inbox_id)
    return await service.sync_status(session, inbox)


@router.post("/{inbox_id}/test-connection", response_model=TestConnectionOut,
             responses=problems(403, 409))  # fmt: skip
async def test_inbox_connection(
    inbox_id: str,
    session: Session,
    caller: CurrentCaller,
    settings: CurrentSettings,
    body: TestConnectionIn | None = None,  # noqa: PT028 (a route, not a test)
) -> TestConnectionOut:
    """Try the stored (or given) IMAP settings: log in and open each folder. Saves nothing;
    a failure answers 200 with `ok: false` and a specific `reason`."""
    inbox = await inboxes_service.get_visible(session, caller, inbox_id)
    caller.require_admin()
    candidate = body.imap if body else None
    await end_before_network_io(session)
    return await service.test_connection(
        inbox,
        candidate,
        cipher_from(settings.inbox_secret_key),
        timeout=min(settings.imap_timeout_seconds, service.TEST_CONNECTION_TIMEOUT),
    )


@router.get("/{inbox_id}/quarantine", response_model=QuarantinePage)
async def list_quarantine(
    inbox_id: str, session: Session, caller: CurrentCaller, page: PageParamsDep
) -> QuarantinePage:
    """Messages stored raw that could not be read as mail, with the parser's error."""
    inbox = await inboxes_service.get_visible(session, caller, inbox_id)
    rows, next_cursor = await service.list_quarantine(session, inbox, page)
    return QuarantinePage(
        items=[QuarantinedMessageOut.model_validate(m) for m in rows], next_cursor=next_cursor
    )
