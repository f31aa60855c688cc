from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, EmailStr, Field, model_validator

from inbox_service.core.pagination import Page
from inbox_service.inboxes.mail_settings import ImapSettingsIn, ImapSettingsOut, imap_settings_out
from inbox_service.inboxes.models import Inbox
from inbox_service.users.schemas import Name, StrictIn

SubjectThreadingDays = Field(
    default=30,
    ge=0,
    le=365,
    description="A reply without reply headers joins a conversation of the same contact with "
    "the same subject active within this many days (0: never thread by subject).",
)


class InboxIn(StrictIn):
    name: Name
    address: EmailStr
    imap: ImapSettingsIn | None = Field(default=None, description="Where its mail comes from.")
    subject_threading_days: int = SubjectThreadingDays


class InboxPatch(StrictIn):
    name: Name | None = None
    address: EmailStr | None = None
    imap: ImapSettingsIn | None = Field(default=None, description="`null` removes them.")
    subject_threading_days: int | None = Field(default=None, ge=0, le=365)


class InboxOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    address: str
    imap: ImapSettingsOut | None
    subject_threading_days: int
    version: int
    created_at: datetime
    updated_at: datetime

    @model_validator(mode="before")
    @classmethod
    def _from_inbox(cls, value: Any) -> Any:
        if isinstance(value, Inbox):
            fields = {name: getattr(value, name) for name in cls.model_fields if name != "imap"}
            return fields | {"imap": imap_settings_out(value)}
        return value


class InboxMemberOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    inbox_id: str
    user_id: str
    created_at: datetime


class InboxPage(Page[InboxOut]):
    """A page of inboxes."""
