"""The caller of routes that also accept `?access_token=<session token>` (the event stream)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request

from inbox_service.core.auth import Authenticator, Caller
from inbox_service.core.deps import Session
from inbox_service.sessions.tokens import allow_query_token


async def _query_token_caller(
    request: Request,
    session: Session,
    access_token: Annotated[
        str | None,
        Query(
            description="A session token, for clients that cannot send `Authorization` "
            "(a browser's `EventSource`). API keys are refused here (401): never put a key "
            "in a URL."
        ),
    ] = None,
) -> Caller:
    del access_token  # read by the authenticator (it re-checks the request later on)
    allow_query_token(request)
    authenticate: Authenticator = request.app.state.authenticate
    return await authenticate(session, request)


QueryTokenCaller = Annotated[Caller, Depends(_query_token_caller)]
