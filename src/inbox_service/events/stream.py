"""`GET /v1/events/stream`: the event log as Server-Sent Events.

    retry: 2000               first, with `id:` = where the stream starts
    id: <feed cursor>         right after this event: `Last-Event-ID` resumes here
    event: <type>
    data: <EventOut JSON>

    event: presence.changed   ephemeral (events.ephemeral): no `id:`, not resumable
    data: <EventOut JSON>

    : keep-alive              after `sse_keepalive_seconds` without anything else

The loop: read the feed after the cursor, a page per short transaction, and only then write
(a slow client never holds a database connection) → write queued ephemeral messages → every
`sse_auth_recheck_seconds`, and at once when the hub says the user's credentials were
revoked (a key, session tokens, the user deleted), authenticate the request's credential
again (revoked, expired, user deleted: the stream ends; memberships changed: the scope
follows) → wait for a wake-up from the hub, the poll interval, the keep-alive or the
re-check, whichever comes first. The
stream ends when the client leaves, when its key stops working, when the server stops, and
on a database error (the client reconnects with `Last-Event-ID` and loses nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Sequence

import anyio
from fastapi import Request
from sqlalchemy.exc import SQLAlchemyError
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from inbox_service.core.auth import Authenticator, Caller
from inbox_service.core.config import Settings
from inbox_service.core.db import SessionMaker, transaction
from inbox_service.core.errors import Unauthorized
from inbox_service.events import service
from inbox_service.events.hub import StreamHub
from inbox_service.events.schemas import EventOut

log = logging.getLogger(__name__)

MEDIA_TYPE = "text/event-stream"
RETRY_MILLISECONDS = 2000
PAGE_SIZE = 100
KEEPALIVE = b": keep-alive\n\n"


class EventStreamResponse(StreamingResponse):
    """`text/event-stream`, unbuffered. Ends when the client leaves, at whatever ASGI spec
    version the server speaks, and always closes its generator (unsubscribing it)."""

    media_type = MEDIA_TYPE

    def __init__(self, content: AsyncGenerator[bytes, None]) -> None:
        super().__init__(
            content,
            headers={
                # SSE is UTF-8 by definition: no `charset` parameter.
                "Content-Type": MEDIA_TYPE,
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            },
        )
        self._content = content

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with anyio.create_task_group() as tasks:

                async def stream() -> None:
                    await self.stream_response(send)
                    tasks.cancel_scope.cancel()

                tasks.start_soon(stream)
                while (await receive())["type"] != "http.disconnect":
                    pass
                tasks.cancel_scope.cancel()
        finally:
            await self._content.aclose()


def _message(event: EventOut, cursor: str | None) -> bytes:
    lines = [] if cursor is None else [f"id: {cursor}"]
    # JSON escapes line breaks, so `data` is one line.
    lines += [f"event: {event.type}", f"data: {event.model_dump_json()}", "", ""]
    return "\n".join(lines).encode()


async def event_stream(
    request: Request, *, caller: Caller, cursor: str, types: Sequence[str]
) -> AsyncGenerator[bytes, None]:
    """The stream's bytes, from `cursor` on, until one of the ends in the module docstring."""
    sessionmaker: SessionMaker = request.app.state.sessionmaker
    hub: StreamHub = request.app.state.stream_hub
    settings: Settings = request.app.state.settings
    loop = asyncio.get_running_loop()
    yield f"retry: {RETRY_MILLISECONDS}\nid: {cursor}\n\n".encode()
    async with hub.subscribe(caller, types) as subscription:
        last_sent = read_at = loop.time()
        recheck_at = last_sent + settings.sse_auth_recheck_seconds
        while not subscription.stopped:
            subscription.wake.clear()  # before reading: a wake-up during the read counts
            if subscription.log_changed or loop.time() >= read_at:
                subscription.log_changed = False
                while True:
                    try:
                        # Shielded: a client leaving mid-read never cuts a query in half.
                        page = await asyncio.shield(
                            _read_page(sessionmaker, subscription.caller, cursor, types)
                        )
                    except (SQLAlchemyError, OSError) as exc:
                        log.warning("event stream ends on a database error: %s", exc)
                        return
                    cursor = page.next_cursor
                    for event, event_cursor in zip(page.events, page.cursors, strict=True):
                        yield _message(EventOut.of(event), event_cursor)
                        last_sent = loop.time()
                    if len(page.events) < PAGE_SIZE or subscription.stopped:
                        break
                # Also without a notification: an older transaction that ended moves the
                # horizon, and notifications are lost while the listener reconnects.
                read_at = loop.time() + settings.sse_poll_seconds
            while subscription.ephemeral and not subscription.stopped:
                yield _message(subscription.ephemeral.popleft(), None)
                last_sent = loop.time()
            now = loop.time()
            if now >= recheck_at or subscription.recheck:
                subscription.recheck = False
                caller_now = await _authenticate_again(request, sessionmaker)
                if caller_now is None:
                    return
                subscription.caller = caller_now
                recheck_at = now + settings.sse_auth_recheck_seconds
            if now - last_sent >= settings.sse_keepalive_seconds:
                yield KEEPALIVE
                last_sent = now
            wait = min(read_at, last_sent + settings.sse_keepalive_seconds, recheck_at) - now
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(subscription.wake.wait(), max(wait, 0))


async def _read_page(
    sessionmaker: SessionMaker, caller: Caller, cursor: str, types: Sequence[str]
) -> service.FeedPage:
    async with transaction(sessionmaker) as session:
        return await service.read_feed(session, caller, after=cursor, types=types, limit=PAGE_SIZE)


async def _authenticate_again(request: Request, sessionmaker: SessionMaker) -> Caller | None:
    """The request's caller as of now; None when its key no longer works."""
    authenticate: Authenticator = request.app.state.authenticate

    async def check() -> Caller:
        async with transaction(sessionmaker) as session:
            return await authenticate(session, request)

    try:
        return await asyncio.shield(check())
    except Unauthorized:
        return None
    except (SQLAlchemyError, OSError) as exc:
        log.warning("event stream ends on a database error: %s", exc)
        return None
