from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from inbox_service.core.inputs import StrictIn
from inbox_service.core.pagination import Page
from inbox_service.inboxes.mail_settings import ImapSettingsIn


class SyncError(BaseModel):
    reason: str = Field(description="dns, refused, tls, auth, timeout, folder_missing, …")
    message: str
    at: datetime


class FolderStatusOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    folder: str
    uidvalidity: int | None
    last_uid: int = Field(description="Every message up to this UID is stored.")
    uidnext: int | None
    highestmodseq: int | None
    uidvalidity_changes: int
    last_success_at: datetime | None


class SyncStatusOut(BaseModel):
    inbox_id: str
    enabled: bool
    worker_id: str | None = Field(description="The worker that syncs this inbox now.")
    requested_at: datetime | None = Field(description="A sync asked for and not yet started.")
    last_attempt_at: datetime | None
    last_success_at: datetime | None
    consecutive_failures: int
    last_error: SyncError | None
    folders: list[FolderStatusOut]


class SyncRequested(BaseModel):
    inbox_id: str
    requested_at: datetime


class TestConnectionIn(StrictIn):
    imap: ImapSettingsIn | None = Field(
        default=None,
        description="Settings to try instead of the stored ones (nothing is saved); "
        "without `secret`, the stored secret is used.",
    )


class FolderCheck(BaseModel):
    folder: str
    uidvalidity: int
    messages: int


class TestConnectionOut(BaseModel):
    ok: bool
    reason: str | None = Field(
        description="Why it failed: dns, refused, tls, auth, timeout, folder_missing, "
        "protocol, unsupported."
    )
    message: str | None
    folders: list[FolderCheck]


class QuarantinedMessageOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    received_at: datetime
    size: int
    subject: str
    parse_status: str
    parse_error: str | None


class QuarantinePage(Page[QuarantinedMessageOut]):
    """A page of messages stored raw that could not be read as mail."""
