"""Presence across two API instances sharing one database, each a real uvicorn with its
own engine and its own LISTEN connection (as two replicas behind a load balancer), on one
injected clock. A heartbeat sent to one is seen by the other, and `presence.changed`
reaches a live stream opened on the other."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn

from inbox_service.app import create_app
from inbox_service.core.clock import FixedClock
from inbox_service.core.config import Settings
from inbox_service.core.db import transaction
from inbox_service.events.hub import StreamHub
from inbox_service.presence.jobs import expire_presence
from tests.assignment.support import ingest, mail
from tests.conftest import CommittedDb
from tests.events.test_stream import WAIT, Stream, _Server
from tests.support.factories import bearer, make_inbox, make_key, make_user
from tests.test_cli_dev import _free_port


@dataclass
class Replica:
    base_url: str
    hub: StreamHub

    async def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=WAIT) as http:
            return await http.request(method, path, **kwargs)

    @contextlib.asynccontextmanager
    async def stream(self, headers: dict[str, str]) -> AsyncIterator[Stream]:
        timeout = httpx.Timeout(WAIT, read=None)
        async with (
            httpx.AsyncClient(base_url=self.base_url, timeout=timeout) as http,
            http.stream("GET", "/v1/events/stream", headers=headers) as response,
        ):
            assert response.status_code == 200
            stream = Stream(response)
            reader = asyncio.create_task(stream.read())
            try:
                await stream.next_message()  # retry + id
                await asyncio.wait_for(self.hub.listening.wait(), WAIT)
                yield stream
            finally:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)


@dataclass
class Setup:
    one: Replica
    two: Replica
    clock: FixedClock
    agent: dict[str, str]
    admin: dict[str, str]
    agent_id: str
    conversation_id: str


@pytest.fixture
async def setup(committed_db: CommittedDb) -> AsyncIterator[Setup]:
    clock = FixedClock()
    sm = committed_db.sessionmaker
    async with transaction(sm) as session:
        admin = await make_user(session, role="admin")
        agent = await make_user(session)
        inbox = await make_inbox(session, members=(agent,))
        keys = [await make_key(session, user) for user in (admin, agent)]
    [cid] = await ingest(sm, inbox.id, [mail("replicas")], now=clock.now())
    servers: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []
    replicas = []
    for _ in range(2):
        # No sessionmaker passed: each app opens its own engine, like a separate process.
        settings = Settings(database_url=committed_db.url, rate_limit_per_minute=0)
        app = create_app(settings, clock=clock)
        port = _free_port()
        server = _Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        task = asyncio.create_task(server.serve())
        servers.append((server, task))
        async with asyncio.timeout(WAIT):
            while not server.started:
                assert not task.done(), "the server did not start"
                await asyncio.sleep(0.01)
        replicas.append(Replica(f"http://127.0.0.1:{port}", app.state.stream_hub))
    try:
        yield Setup(
            one=replicas[0],
            two=replicas[1],
            clock=clock,
            admin=bearer(keys[0]),
            agent=bearer(keys[1]),
            agent_id=agent.id,
            conversation_id=cid,
        )
    finally:
        for server, _ in servers:
            server.should_exit = True
        await asyncio.wait_for(asyncio.gather(*(task for _, task in servers)), WAIT)


class TestAcrossReplicas:
    async def test_a_heartbeat_on_one_is_seen_and_streamed_on_the_other(
        self, setup: Setup, committed_db: CommittedDb
    ) -> None:
        path = f"/v1/conversations/{setup.conversation_id}/presence"
        async with setup.two.stream(setup.admin) as stream:
            put = await setup.one.call("PUT", path, json={"state": "viewing"}, headers=setup.agent)
            assert put.status_code == 200, put.text

            changed = await stream.next_event()
            assert changed.event == "presence.changed"
            assert changed.id is None  # stream-only, not resumable
            assert changed.data["conversation_id"] == setup.conversation_id
            assert changed.data["data"] == {
                "conversation_id": setup.conversation_id,
                "user_id": setup.agent_id,
                "state": "viewing",
                "previous_state": None,
            }
            seen = await setup.two.call("GET", path, headers=setup.admin)
            assert [v["user_id"] for v in seen.json()["viewers"]] == [setup.agent_id]
            detail = await setup.two.call(
                "GET", f"/v1/conversations/{setup.conversation_id}", headers=setup.admin
            )
            assert [v["user_id"] for v in detail.json()["viewers"]] == [setup.agent_id]

            # A renewal (on the other replica) changes nothing anyone sees: no event.
            setup.clock.advance(seconds=20)
            await setup.two.call("PUT", path, json={"state": "viewing"}, headers=setup.agent)
            await stream.assert_quiet()

            await setup.two.call("PUT", path, json={"state": "composing"}, headers=setup.agent)
            composing = await stream.next_event()
            assert composing.data["data"]["state"] == "composing"
            assert composing.data["data"]["previous_state"] == "viewing"

            # Not renewed for 30 s: gone on both replicas, and the sweeper announces it.
            setup.clock.advance(seconds=30)
            for replica in (setup.one, setup.two):
                gone = await replica.call("GET", path, headers=setup.admin)
                assert gone.json()["composers"] == gone.json()["viewers"] == []
            assert await expire_presence(committed_db.sessionmaker, setup.clock) == 1
            expired = await stream.next_event()
            assert expired.data["data"]["state"] is None
            assert expired.data["data"]["reason"] == "expired"

            # Back, then leaving explicitly through the other replica.
            await setup.one.call("PUT", path, json={"state": "viewing"}, headers=setup.agent)
            assert (await stream.next_event()).data["data"]["state"] == "viewing"
            left = await setup.two.call("DELETE", path, headers=setup.agent)
            assert left.status_code == 204
            gone_event = await stream.next_event()
            assert gone_event.data["data"]["state"] is None
            assert gone_event.data["data"]["reason"] == "left"
