from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class CsatIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    score: int = Field(ge=1, le=5, description="1 (very unhappy) to 5 (very happy).")
    comment: str | None = Field(default=None, max_length=2000)


class CsatOut(BaseModel):
    """A recorded rating."""

    conversation_id: str
    cycle: int = Field(description="Resolution cycle rated: 0, then +1 per reopening.")
    score: int
    comment: str | None
    created_at: datetime


class CsatList(BaseModel):
    items: list[CsatOut]
