from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from inbox_service.core.inputs import StrictIn

PresenceState = Literal["viewing", "composing"]


class PresenceIn(StrictIn):
    state: PresenceState = Field(
        description="`viewing` while the conversation is open, `composing` while writing."
    )


class PresentUser(BaseModel):
    """Someone in a conversation right now."""

    user_id: str
    name: str
    state: PresenceState
    since: datetime = Field(description="When they started viewing or composing.")
    expires_at: datetime = Field(description="Gone at this time unless renewed.")


class PresenceOut(BaseModel):
    """Who is in the conversation: each person once, in `viewers` or in `composers`."""

    conversation_id: str
    viewers: list[PresentUser]
    composers: list[PresentUser]
    ttl_seconds: int = Field(description="How long a heartbeat counts; renew well before.")
