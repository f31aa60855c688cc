from __future__ import annotations

from fastapi import APIRouter, status

from inbox_service.conversations import service as conversations_service
from inbox_service.core.deps import CurrentCaller, CurrentClock, Session
from inbox_service.core.errors import problems
from inbox_service.presence import service
from inbox_service.presence.schemas import PresenceIn, PresenceOut

router = APIRouter(
    prefix="/v1/conversations", tags=["presence"], responses=problems(401, 404, 422, 429)
)


@router.put("/{conversation_id}/presence", response_model=PresenceOut)
async def set_presence(
    conversation_id: str,
    body: PresenceIn,
    session: Session,
    caller: CurrentCaller,
    clock: CurrentClock,
) -> PresenceOut:
    """Heartbeat: you are viewing (or composing in) the conversation for the next 30 s.
    Answers who is there now."""
    conversation = await conversations_service.get_visible_conversation(
        session, caller, conversation_id
    )
    now = clock.now()
    await service.heartbeat(
        session, conversation, user_id=caller.user_id, state=body.state, now=now
    )
    return await service.presence_out(session, conversation, now=now)


@router.delete("/{conversation_id}/presence", status_code=status.HTTP_204_NO_CONTENT)
async def clear_presence(
    conversation_id: str, session: Session, caller: CurrentCaller, clock: CurrentClock
) -> None:
    """You left the conversation (leaving twice is fine)."""
    conversation = await conversations_service.get_visible_conversation(
        session, caller, conversation_id
    )
    await service.leave(session, conversation, user_id=caller.user_id, now=clock.now())


@router.get("/{conversation_id}/presence", response_model=PresenceOut)
async def get_presence(
    conversation_id: str, session: Session, caller: CurrentCaller, clock: CurrentClock
) -> PresenceOut:
    """Who is viewing and who is composing in the conversation now."""
    conversation = await conversations_service.get_visible_conversation(
        session, caller, conversation_id
    )
    return await service.presence_out(session, conversation, now=clock.now())
