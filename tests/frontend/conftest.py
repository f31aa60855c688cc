"""A real uvicorn serving the app on 127.0.0.1 (a database of its own, real commits), with a
team, conversations and helpers to mint session tokens; for the browser, the generated
clients and the token tests that need a live stream."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http.server
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy import select

from inbox_service.app import create_app
from inbox_service.conversations.models import Conversation
from inbox_service.core.clock import FixedClock
from inbox_service.core.config import Settings
from inbox_service.core.db import SessionMaker, transaction
from inbox_service.ingest.mime import parse_message
from inbox_service.ingest.store import InboxContext, Incoming, store_batch
from tests.conftest import CommittedDb
from tests.support.factories import bearer, make_inbox, make_key, make_user
from tests.test_cli_dev import _free_port

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
WAIT = 10.0


def raw_mail(n: int, subject: str | None = None) -> bytes:
    return (
        f"From: c{n}@customer.test\r\nTo: support@example.com\r\n"
        f"Subject: {subject or f'Question {n}'}\r\n"
        f"Message-ID: <fe{n}@customer.test>\r\nDate: Mon, 02 Mar 2026 10:00:00 +0000\r\n\r\nHi\r\n"
    ).encode()


@dataclass
class Api:
    """A running server and the team it was seeded with."""

    base_url: str
    app: FastAPI
    sessionmaker: SessionMaker
    clock: FixedClock
    admin_key: str
    agent_key: str
    outsider_key: str
    admin_id: str
    agent_id: str
    outsider_id: str
    inbox_a: str
    inbox_b: str

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, timeout=WAIT)

    async def mint(self, user_id: str, *, key: str | None = None, ttl: int = 3600) -> str:
        async with self.http() as http:
            response = await http.post(
                "/v1/session-tokens",
                json={"user_id": user_id, "ttl_seconds": ttl},
                headers=bearer(key or self.admin_key),
            )
        assert response.status_code == 201, response.text
        token: str = response.json()["token"]
        return token

    async def add_conversations(self, inbox_id: str, *numbers: int) -> list[str]:
        """Conversations stored (and committed) as ingest stores them, one per number."""
        async with transaction(self.sessionmaker) as session:
            items = [Incoming(raw=raw_mail(n), parsed=parse_message(raw_mail(n))) for n in numbers]
            context = InboxContext(inbox_id=inbox_id, team_addresses=frozenset())
            await store_batch(session, context, items, now=datetime(2026, 3, 2, 12, tzinfo=UTC))
        async with transaction(self.sessionmaker) as session:
            rows = await session.scalars(
                select(Conversation.id)
                .where(Conversation.subject.in_([f"Question {n}" for n in numbers]))
                .order_by(Conversation.id)
            )
            return list(rows)

    async def conversation(self, conversation_id: str) -> Conversation:
        async with transaction(self.sessionmaker) as session:
            row = await session.get(Conversation, conversation_id)
            assert row is not None
            return row


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the test process keeps its own."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


StartApi = Callable[..., Awaitable[Api]]


@pytest.fixture
async def start_api(committed_db: CommittedDb) -> AsyncIterator[StartApi]:
    """Start a server with these Settings overrides; every one is stopped at the end."""
    async with transaction(committed_db.sessionmaker) as session:
        admin = await make_user(session, role="admin")
        agent = await make_user(session)
        outsider = await make_user(session)
        inbox_a = await make_inbox(session, members=(agent,))
        inbox_b = await make_inbox(session, members=(outsider,))
        keys = [await make_key(session, user) for user in (admin, agent, outsider)]
    servers: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []

    async def start(**overrides: Any) -> Api:
        settings = Settings(
            **{
                "database_url": committed_db.url,
                "rate_limit_per_minute": 0,
                "sse_poll_seconds": 0.5,
                **overrides,
            }
        )
        clock = FixedClock()
        app = create_app(settings, sessionmaker=committed_db.sessionmaker, clock=clock)
        port = _free_port()
        server = _Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", ws="none")
        )
        task = asyncio.create_task(server.serve())
        servers.append((server, task))
        async with asyncio.timeout(WAIT):
            while not server.started:
                assert not task.done(), "the server did not start"
                await asyncio.sleep(0.01)
        return Api(
            base_url=f"http://127.0.0.1:{port}",
            app=app,
            sessionmaker=committed_db.sessionmaker,
            clock=clock,
            admin_key=keys[0],
            agent_key=keys[1],
            outsider_key=keys[2],
            admin_id=admin.id,
            agent_id=agent.id,
            outsider_id=outsider.id,
            inbox_a=inbox_a.id,
            inbox_b=inbox_b.id,
        )

    yield start
    for server, _ in servers:
        server.should_exit = True
    await asyncio.wait_for(asyncio.gather(*(task for _, task in servers)), WAIT)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@contextlib.contextmanager
def static_site(directory: Path) -> Iterator[str]:
    """A tiny static file server for `directory` on a free 127.0.0.1 port: its origin."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(WAIT)
