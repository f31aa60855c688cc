from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, EmailStr, Field, StringConstraints

from inbox_service.core.inputs import StrictIn
from inbox_service.core.openapi import named_enum
from inbox_service.core.pagination import Page

Availability = Annotated[Literal["available", "away"], named_enum("Availability")]
RoleName = Annotated[Literal["admin", "agent"], named_enum("Role")]
# Names end up in mail headers later: no control characters (CR/LF injection).
Name = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$"
    ),
]


class UserIn(StrictIn):
    email: EmailStr
    name: Name
    role: RoleName = "agent"
    availability: Availability = "available"
    capacity: int = Field(default=20, ge=0, le=10_000, description="Max open assigned.")


class UserPatch(StrictIn):
    email: EmailStr | None = None
    name: Name | None = None
    role: RoleName | None = None
    availability: Availability | None = None
    capacity: int | None = Field(default=None, ge=0, le=10_000)


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    email: str
    name: str
    role: RoleName
    availability: Availability
    capacity: int
    version: int
    created_at: datetime
    updated_at: datetime


class MeOut(UserOut):
    inbox_ids: list[str] = Field(description="Inboxes this user is a member of.")


class ApiKeyIn(StrictIn):
    name: Name = "API key"
    user_id: str | None = Field(
        default=None, description="Admins may create a key for another user; default: yourself."
    )
    # Aware only: a naive time is ambiguous, and comparing it with `now` would fail.
    expires_at: AwareDatetime | None = None


class ApiKeyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    user_id: str
    name: str
    prefix: str = Field(description="The first characters of the key, to recognise it.")
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyOut):
    secret: str = Field(description="The API key. Shown once; store it now.")


class UserPage(Page[UserOut]):
    """A page of users."""


class ApiKeyPage(Page[ApiKeyOut]):
    """A page of API keys."""
