from __future__ import annotations

from fastapi import APIRouter, Response, status

from inbox_service.conversations import service as conversations_service
from inbox_service.core.deps import CurrentCaller, CurrentClock, Session
from inbox_service.core.errors import problems
from inbox_service.core.pagination import PageParamsDep
from inbox_service.replies import service
from inbox_service.replies.models import Signature
from inbox_service.replies.schemas import ReplyIn, ReplyOut, ReplyPage, SignatureIn, SignatureOut

router = APIRouter(prefix="/v1", tags=["replies"], responses=problems(401, 422, 429))


@router.post(
    "/conversations/{conversation_id}/replies",
    response_model=ReplyOut,
    status_code=status.HTTP_201_CREATED,
    responses=problems(404, 409),
)
async def create_reply(
    conversation_id: str,
    body: ReplyIn,
    session: Session,
    caller: CurrentCaller,
    clock: CurrentClock,
    response: Response,
) -> ReplyOut:
    """Reply to the conversation's contact by mail. It waits `send_at` (default: the inbox's
    undo window) and is then sent; 409 `reply-collision` if something arrived since
    `expected_last_message_id` (nothing is sent)."""
    reply = await service.create_reply(session, caller, conversation_id, body, now=clock.now())
    response.headers["Location"] = f"/v1/replies/{reply.id}"
    return service.reply_out(reply)


@router.get(
    "/conversations/{conversation_id}/replies",
    response_model=ReplyPage,
    responses=problems(404),
)
async def list_conversation_replies(
    conversation_id: str, session: Session, caller: CurrentCaller, page: PageParamsDep
) -> ReplyPage:
    """The conversation's replies with their delivery status, oldest first."""
    conversation = await conversations_service.get_visible_conversation(
        session, caller, conversation_id
    )
    items, next_cursor = await service.list_for_conversation(session, conversation, page)
    return ReplyPage(items=[service.reply_out(r) for r in items], next_cursor=next_cursor)


@router.get("/replies/{reply_id}", response_model=ReplyOut, responses=problems(404))
async def get_reply(reply_id: str, session: Session, caller: CurrentCaller) -> ReplyOut:
    """One reply and its delivery status."""
    return service.reply_out(await service.get_visible(session, caller, reply_id))


@router.post("/replies/{reply_id}/cancel", response_model=ReplyOut, responses=problems(404, 409))
async def cancel_reply(
    reply_id: str, session: Session, caller: CurrentCaller, clock: CurrentClock
) -> ReplyOut:
    """Undo send: stop a `scheduled` or `queued` reply (409 once it is being sent)."""
    reply = await service.get_visible(session, caller, reply_id, for_update=True)
    return service.reply_out(await service.cancel(session, reply, now=clock.now()))


@router.post("/replies/{reply_id}/retry", response_model=ReplyOut, responses=problems(404, 409))
async def retry_reply(
    reply_id: str, session: Session, caller: CurrentCaller, clock: CurrentClock
) -> ReplyOut:
    """Send a `failed` or `unknown` reply again (your decision: an `unknown` one may have
    arrived already; it keeps its Message-ID, so mail clients can drop a duplicate)."""
    reply = await service.get_visible(session, caller, reply_id, for_update=True)
    return service.reply_out(await service.retry(session, reply, now=clock.now()))


@router.get("/me/signature", response_model=SignatureOut)
async def get_my_signature(session: Session, caller: CurrentCaller) -> SignatureOut:
    """Your signature, appended to your replies."""
    found = await session.get(Signature, caller.user_id)
    return SignatureOut(
        text=found.text if found else "", updated_at=found.updated_at if found else None
    )


@router.put("/me/signature", response_model=SignatureOut)
async def set_my_signature(
    body: SignatureIn, session: Session, caller: CurrentCaller, clock: CurrentClock
) -> SignatureOut:
    """Set your signature (empty: none)."""
    found = await service.set_signature(session, caller.user_id, body.text, now=clock.now())
    return SignatureOut(text=found.text, updated_at=found.updated_at)
