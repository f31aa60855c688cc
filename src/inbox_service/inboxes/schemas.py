from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, EmailStr

from inbox_service.core.pagination import Page
from inbox_service.users.schemas import Name, StrictIn


class InboxIn(StrictIn):
    name: Name
    address: EmailStr


class InboxPatch(StrictIn):
    name: Name | None = None
    address: EmailStr | None = None


class InboxOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    address: str
    version: int
    created_at: datetime
    updated_at: datetime


class InboxMemberOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    inbox_id: str
    user_id: str
    created_at: datetime


class InboxPage(Page[InboxOut]):
    """A page of inboxs."""
