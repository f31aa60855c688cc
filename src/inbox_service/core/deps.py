"""`Annotated` aliases for everything routes get injected."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
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


async def _caller(request: Request, session: Session) -> Caller:
    authenticate: Authenticator = request.app.state.authenticate
    return await authenticate(session, request)


@asynccontextmanager
async def reading(request: Request) -> AsyncIterator[tuple[AsyncSession, Caller]]:
    """A session for a route that only reads, and the caller authenticated on it.

    Each statement commits on its own (AUTOCOMMIT), so there is no BEGIN and COMMIT to
    wait for; under READ COMMITTED every statement reads a snapshot of its own anyway. The
    lists open it themselves rather than have it injected: FastAPI's generator
    dependencies cost a tenth of the CPU of a list request, the API's busiest."""
    sessionmaker: SessionMaker = request.app.state.read_sessionmaker
    authenticate: Authenticator = request.app.state.authenticate
    async with sessionmaker() as session:
        yield session, await authenticate(session, request)


def clock_of(request: Request) -> Clock:
    clock: Clock = request.app.state.clock
    return clock


# The plain dependencies are `async def`: FastAPI runs a `def` one in a worker thread.
async def _clock(request: Request) -> Clock:
    return clock_of(request)


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


CurrentCaller = Annotated[Caller, Depends(_caller)]
CurrentClock = Annotated[Clock, Depends(_clock)]
CurrentSettings = Annotated[Settings, Depends(_settings)]
IfMatch = Annotated[
    str | None,
    Header(description="The `ETag` you read; a stale one answers 412.", alias="If-Match"),
]
