from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from inbox_service.core.events import Event


class EventOut(BaseModel):
    """The envelope shared by the feed, the live stream and webhooks."""

    id: str = Field(description="`evt_…`; the same id on every channel.")
    type: str
    created_at: datetime
    inbox_id: str | None
    conversation_id: str | None
    data: dict[str, Any]

    @classmethod
    def of(cls, event: Event) -> EventOut:
        return cls(
            id=event.public_id,
            type=event.type,
            created_at=event.created_at,
            inbox_id=event.inbox_id,
            conversation_id=event.conversation_id,
            data=event.data,
        )


class EventFeed(BaseModel):
    items: list[EventOut]
    next_cursor: str = Field(
        description="Pass as `after` to get what comes next; returned even when `items` is "
        "empty, so a poller keeps its place."
    )
