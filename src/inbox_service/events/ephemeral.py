"""Stream-only events (`presence.changed`): sent to the live streams at commit, never stored.

They travel as a NOTIFY on `inbox_ephemeral` inside the caller's transaction, so they go
out when it commits and not at all when it rolls back, and every API process's listener
(`events.hub`) forwards them to the streams of callers who can see the inbox. They carry no
SSE `id:` (nothing to resume from) and are lost when no listener is connected.

The payload is the whole envelope, the same as a stored event's on the stream. PostgreSQL
refuses NOTIFY payloads of 8000 bytes or more, so `data` must stay small: ids, states and
times, never bodies. A payload above `MAX_PAYLOAD_BYTES` is a programming error (ValueError).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from inbox_service.core.events import EventType
from inbox_service.core.ids import new_id
from inbox_service.events.hub import EPHEMERAL_CHANNEL
from inbox_service.events.schemas import EventOut

# Below PostgreSQL's 8000-byte limit, with room to spare.
MAX_PAYLOAD_BYTES = 7500

_NOTIFY = text("SELECT pg_notify(:channel, :payload)")


async def publish_ephemeral(
    session: AsyncSession,
    event_type: EventType,
    data: dict[str, Any],
    *,
    inbox_id: str,
    conversation_id: str | None,
    now: datetime,
) -> EventOut:
    """Send a stream-only event to the streams that can see `inbox_id` when the caller's
    transaction commits; the envelope sent (its id is `eph_…`)."""
    event = EventOut(
        id=new_id("eph"),
        type=event_type.value,
        created_at=now,
        inbox_id=inbox_id,
        conversation_id=conversation_id,
        data=data,
    )
    payload = event.model_dump_json()
    size = len(payload.encode())
    if size > MAX_PAYLOAD_BYTES:
        raise ValueError(
            f"an ephemeral event is at most {MAX_PAYLOAD_BYTES} bytes of JSON, this one is "
            f"{size}: send ids, not contents"
        )
    await session.execute(_NOTIFY, {"channel": EPHEMERAL_CHANNEL, "payload": payload})
    return event
