"""`Annotated` aliases for everything routes get injected."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.ext.asyncio import AsyncSession

from inbox_service.core.auth import Authenticator, Caller
from inbox_service.core.clock import Clock
from inbox_service.core.config import Settings
from inbox_service.core.db import SessionMaker, transaction


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    sessionmaker: SessionMaker = request.app.state.sessionmaker
    async with transaction(sessionmaker) as session:
        yield session


# scope="function": the transaction commits before the response is sent, so a 2xx never
# goes out for a write that then failed to commit.
Session = Annotated[AsyncSession, Depends(_session, scope="function")]


async def _read_session(request: Request) -> AsyncIterator[AsyncSession]:
    sessionmaker: SessionMaker = request.app.state.read_sessionmaker
    async with sessionmaker() as session:
        yield session


# For routes that only read: each statement commits on its own (AUTOCOMMIT), so there is
# no BEGIN and COMMIT to wait for. Under READ COMMITTED every statement reads a snapshot
# of its own anyway; what a transaction would add is two round trips.
ReadSession = Annotated[AsyncSession, Depends(_read_session, scope="function")]


async def _caller(request: Request, session: Session) -> Caller:
    authenticate: Authenticator = request.app.state.authenticate
    return await authenticate(session, request)


async def _read_caller(request: Request, session: ReadSession) -> Caller:
    authenticate: Authenticator = request.app.state.authenticate
    return await authenticate(session, request)


# The plain dependencies are `async def`: FastAPI runs a `def` one in a worker thread.
async def _clock(request: Request) -> Clock:
    clock: Clock = request.app.state.clock
    return clock


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


CurrentCaller = Annotated[Caller, Depends(_caller)]
# The caller of a ReadSession route, authenticated on that session (one connection).
ReadCaller = Annotated[Caller, Depends(_read_caller)]
CurrentClock = Annotated[Clock, Depends(_clock)]
CurrentSettings = Annotated[Settings, Depends(_settings)]
IfMatch = Annotated[
    str | None,
    Header(description="The `ETag` you read; a stale one answers 412.", alias="If-Match"),
]
