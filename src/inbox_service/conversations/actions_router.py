from __future__ import annotations

from fastapi import APIRouter, Response, status

from inbox_service.conversations import assign, bulk, merge, notes, service, tags
from inbox_service.conversations.schemas import (
    AssignIn,
    BulkIn,
    BulkOut,
    ConversationOut,
    MergeIn,
    NoteIn,
    NoteOut,
    SplitIn,
    TagIn,
    TagOut,
    TagPage,
)
from inbox_service.core.deps import CurrentCaller, CurrentClock, IfMatch, Session
from inbox_service.core.errors import problems
from inbox_service.core.etag import check_if_match
from inbox_service.core.pagination import PageParamsDep

router = APIRouter(prefix="/v1", responses=problems(401, 422, 429))


@router.get("/tags", response_model=TagPage, tags=["tags"])
async def list_tags(session: Session, caller: CurrentCaller, page: PageParamsDep) -> TagPage:
    """Every tag."""
    rows, next_cursor = await tags.list_tags(session, page)
    return TagPage(items=[TagOut.model_validate(t) for t in rows], next_cursor=next_cursor)


@router.post(
    "/tags",
    response_model=TagOut,
    status_code=status.HTTP_201_CREATED,
    tags=["tags"],
    responses=problems(409),
)
async def create_tag(
    body: TagIn, session: Session, caller: CurrentCaller, clock: CurrentClock, response: Response
) -> TagOut:
    """Create a tag; 409 when one with the same name (whatever the case) exists."""
    tag = await tags.create_tag(session, body.name, now=clock.now())
    response.headers["Location"] = f"/v1/tags/{tag.id}"
    return TagOut.model_validate(tag)


@router.delete(
    "/tags/{tag_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    tags=["tags"],
    responses=problems(403, 404),
)
async def delete_tag(tag_id: str, session: Session, caller: CurrentCaller) -> None:
    """Delete a tag everywhere (admin)."""
    caller.require_admin()
    await tags.delete_tag(session, tag_id)


@router.post(
    "/conversations/{conversation_id}/tags",
    response_model=ConversationOut,
    tags=["conversations"],
    responses=problems(404),
)
async def tag_conversation(
    conversation_id: str, body: TagIn, session: Session, caller: CurrentCaller, clock: CurrentClock
) -> ConversationOut:
    """Add an existing tag to the conversation (adding it twice changes nothing)."""
    conversation = await service.get_visible_conversation(
        session, caller, conversation_id, for_update=True
    )
    await tags.tag_conversation(
        session, conversation, body.name, actor_id=caller.user_id, now=clock.now()
    )
    return await service.conversation_out(session, conversation, now=clock.now())


@router.delete(
    "/conversations/{conversation_id}/tags/{tag}",
    response_model=ConversationOut,
    tags=["conversations"],
    responses=problems(404),
)
async def untag_conversation(
    conversation_id: str, tag: str, session: Session, caller: CurrentCaller, clock: CurrentClock
) -> ConversationOut:
    """Remove a tag (by name) from the conversation."""
    conversation = await service.get_visible_conversation(
        session, caller, conversation_id, for_update=True
    )
    await tags.untag_conversation(
        session, conversation, tag, actor_id=caller.user_id, now=clock.now()
    )
    return await service.conversation_out(session, conversation, now=clock.now())


@router.post(
    "/conversations/{conversation_id}/notes",
    response_model=NoteOut,
    status_code=status.HTTP_201_CREATED,
    tags=["conversations"],
    responses=problems(404, 409),
)
async def create_note(
    conversation_id: str, body: NoteIn, session: Session, caller: CurrentCaller, clock: CurrentClock
) -> NoteOut:
    """An internal note (never sent to the customer); `@mentions` are resolved to users.
    With `expected_last_message_id`, 409 (listing them) if messages arrived since."""
    # Locked when checking: a message stored meanwhile is either seen or comes after.
    conversation = await service.get_visible_conversation(
        session, caller, conversation_id, for_update=body.expected_last_message_id is not None
    )
    note = await notes.add_note(
        session,
        conversation,
        body.body,
        author_id=caller.user_id,
        now=clock.now(),
        expected_last_message_id=body.expected_last_message_id,
    )
    return NoteOut.model_validate(note)


@router.post(
    "/conversations/{conversation_id}/assign",
    response_model=ConversationOut,
    tags=["conversations"],
    responses=problems(404, 412),
)
async def assign_conversation(
    conversation_id: str,
    body: AssignIn,
    session: Session,
    caller: CurrentCaller,
    clock: CurrentClock,
    if_match: IfMatch = None,
) -> ConversationOut:
    """Assign the conversation to a member of its inbox, or unassign it with `null`. With
    `If-Match`, only if nobody changed it since you read it (412 otherwise)."""
    conversation = await service.get_visible_conversation(
        session, caller, conversation_id, for_update=True
    )
    check_if_match(if_match, conversation.version)
    await assign.assign(
        session, conversation, body.assignee_id, actor_id=caller.user_id, now=clock.now()
    )
    return await service.conversation_out(session, conversation, now=clock.now())


@router.post(
    "/conversations/bulk", response_model=BulkOut, tags=["conversations"], responses=problems(404)
)
async def bulk_update_conversations(
    body: BulkIn, session: Session, caller: CurrentCaller, clock: CurrentClock
) -> BulkOut:
    """One action (assign, status, priority, tag, untag) on up to 100 conversations: all
    or nothing, with a result per id and one event per conversation that changed."""
    return BulkOut(results=await bulk.run(session, caller, body, now=clock.now()))


@router.post(
    "/conversations/{conversation_id}/merge",
    response_model=ConversationOut,
    tags=["conversations"],
    responses=problems(404),
)
async def merge_conversation(
    conversation_id: str,
    body: MergeIn,
    session: Session,
    caller: CurrentCaller,
    clock: CurrentClock,
) -> ConversationOut:
    """Move the messages, notes, tags and timeline of `source_id` into this conversation."""
    # Lock both in id order: two opposite merges at once must not deadlock.
    locked = {
        cid: await service.get_visible_conversation(session, caller, cid, for_update=True)
        for cid in sorted({conversation_id, body.source_id})
    }
    target, source = locked[conversation_id], locked[body.source_id]
    await merge.merge(session, target, source, actor_id=caller.user_id, now=clock.now())
    return await service.conversation_out(session, target, now=clock.now())


@router.post(
    "/conversations/{conversation_id}/split",
    response_model=ConversationOut,
    status_code=status.HTTP_201_CREATED,
    tags=["conversations"],
    responses=problems(404),
)
async def split_conversation(
    conversation_id: str,
    body: SplitIn,
    session: Session,
    caller: CurrentCaller,
    clock: CurrentClock,
) -> ConversationOut:
    """Move a message and the later replies to it into a new conversation (returned)."""
    conversation = await service.get_visible_conversation(
        session, caller, conversation_id, for_update=True
    )
    new = await merge.split(
        session, conversation, body.message_id, actor_id=caller.user_id, now=clock.now()
    )
    return await service.conversation_out(session, new, now=clock.now())
