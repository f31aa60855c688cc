from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, StringConstraints

from inbox_service.core.inputs import StrictIn
from inbox_service.core.pagination import Page


class ContactOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    email: str
    name: str | None
    first_seen_at: datetime
    version: int


class ContactPage(Page[ContactOut]):
    """A page of contacts."""


class ContactPatch(StrictIn):
    name: Annotated[
        str,
        StringConstraints(
            strip_whitespace=True, min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$"
        ),
    ]
