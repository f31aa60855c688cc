from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field, model_validator

from inbox_service.core.inputs import StrictIn
from inbox_service.core.pagination import Page
from inbox_service.inboxes.mail_settings import (
    AutoAckIn,
    AutoAckOut,
    ImapSettingsIn,
    ImapSettingsOut,
    SmtpSettingsIn,
    SmtpSettingsOut,
    auto_ack_out,
    imap_settings_out,
    smtp_settings_out,
)
from inbox_service.inboxes.models import Inbox
from inbox_service.users.schemas import Name

SubjectThreadingDays = Field(
    default=30,
    ge=0,
    le=365,
    description="A reply without reply headers joins a conversation of the same contact with "
    "the same subject active within this many days (0: never thread by subject).",
)
UndoSendSeconds = Field(
    default=0,
    ge=0,
    le=600,
    description="Replies wait this long before sending; `POST /v1/replies/{id}/cancel` "
    "stops them meanwhile (undo send).",
)

AutoAssignment = Literal["off", "round_robin", "least_loaded"]
AUTO_ASSIGNMENT_DOC = (
    "Who gets new conversations (and reopened ones whose assignee is away): nobody (`off`), "
    "the next available member in turn (`round_robin`) or the available member with the "
    "fewest open conversations (`least_loaded`); never anyone at capacity."
)


class InboxIn(StrictIn):
    name: Name
    address: EmailStr
    imap: ImapSettingsIn | None = Field(default=None, description="Where its mail comes from.")
    subject_threading_days: int = SubjectThreadingDays
    smtp: SmtpSettingsIn | None = Field(default=None, description="Where its replies go.")
    undo_send_seconds: int = UndoSendSeconds
    auto_ack: AutoAckIn | None = Field(default=None, description="Off by default.")
    auto_assignment: AutoAssignment = Field(default="off", description=AUTO_ASSIGNMENT_DOC)


class InboxPatch(StrictIn):
    name: Name | None = None
    address: EmailStr | None = None
    imap: ImapSettingsIn | None = Field(default=None, description="`null` removes them.")
    subject_threading_days: int | None = Field(default=None, ge=0, le=365)
    smtp: SmtpSettingsIn | None = Field(default=None, description="`null` removes them.")
    undo_send_seconds: int | None = Field(default=None, ge=0, le=600)
    auto_ack: AutoAckIn | None = Field(default=None, description="`null` turns it off.")
    auto_assignment: AutoAssignment | None = Field(default=None, description=AUTO_ASSIGNMENT_DOC)


class InboxOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    address: str
    imap: ImapSettingsOut | None
    subject_threading_days: int
    auto_assignment: AutoAssignment
    smtp: SmtpSettingsOut | None
    undo_send_seconds: int
    auto_ack: AutoAckOut
    version: int
    created_at: datetime
    updated_at: datetime

    @model_validator(mode="before")
    @classmethod
    def _from_inbox(cls, value: Any) -> Any:
        if isinstance(value, Inbox):
            derived = {
                "imap": imap_settings_out(value),
                "smtp": smtp_settings_out(value),
                "auto_ack": auto_ack_out(value),
            }
            names = [name for name in cls.model_fields if name not in derived]
            fields = {name: getattr(value, name) for name in names}
            return fields | derived
        return value


class InboxMemberOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    inbox_id: str
    user_id: str
    created_at: datetime


class InboxPage(Page[InboxOut]):
    """A page of inboxes."""
