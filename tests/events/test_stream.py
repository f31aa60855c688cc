"""GET /v1/events/stream: the event log as Server-Sent Events.

A real uvicorn on 127.0.0.1 serves the app (httpx's ASGITransport would buffer the whole,
never-ending answer), on a database of its own (`committed_db`) where events commit for
real. Clients read each stream in the background into a queue, so every wait is bounded
by a timeout and "nothing arrives" is a short, bounded wait too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy import text

from inbox_service.app import create_app
from inbox_service.core.clock import FixedClock
from inbox_service.core.config import Settings
from inbox_service.core.db import SessionMaker, plain_dsn, transaction
from inbox_service.core.events import EventType, emit
from inbox_service.events.ephemeral import publish_ephemeral
from inbox_service.events.hub import LISTENER_APPLICATION_NAME, StreamHub
from tests.conftest import CommittedDb
from tests.events.test_feed import emit_committed, raw_cursor
from tests.support.factories import NOW, bearer, make_inbox, make_key, make_user
from tests.test_cli_dev import _free_port

WAIT = 10.0  # the longest any expected message may take
QUIET = 0.6  # how long "nothing more arrives" is watched


@dataclass
class Message:
    """One SSE block: its fields, or its comments (a keep-alive)."""

    fields: dict[str, str] = field(default_factory=dict)
    comments: list[str] = field(default_factory=list)

    @property
    def id(self) -> str | None:
        return self.fields.get("id")

    @property
    def event(self) -> str | None:
        return self.fields.get("event")

    @property
    def data(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.fields["data"])
        return value


END = Message(comments=["<end of stream>"])


class Stream:
    """One open stream, read in the background: waiting on it never breaks the reader."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.messages: asyncio.Queue[Message] = asyncio.Queue()
        self.events: list[Message] = []  # every event taken so far

    async def read(self) -> None:
        block = Message()
        try:
            async for line in self.response.aiter_lines():
                if line == "":
                    if block.fields or block.comments:
                        await self.messages.put(block)
                    block = Message()
                elif line.startswith(":"):
                    block.comments.append(line[1:].strip())
                else:
                    name, _, value = line.partition(":")
                    block.fields[name] = value.removeprefix(" ")
        except httpx.HTTPError:
            pass
        await self.messages.put(END)

    async def next_message(self, seconds: float = WAIT) -> Message:
        return await asyncio.wait_for(self.messages.get(), seconds)

    async def next_event(self, seconds: float = WAIT) -> Message:
        """The next message with an `event:` (keep-alive comments skipped)."""
        async with asyncio.timeout(seconds):
            while True:
                message = await self.messages.get()
                assert message is not END, "the stream ended"
                if message.event is not None:
                    self.events.append(message)
                    return message

    async def event_ids(self, count: int) -> list[str]:
        return [(await self.next_event()).data["id"] for _ in range(count)]

    async def assert_quiet(self, within: float = QUIET) -> None:
        """No event arrives for `within` seconds."""
        with contextlib.suppress(TimeoutError):
            message = await self.next_event(within)
            raise AssertionError(f"unexpected event {message.fields}")

    async def assert_ends(self, seconds: float = WAIT) -> None:
        async with asyncio.timeout(seconds):
            while (await self.messages.get()) is not END:
                pass


@dataclass
class Live:
    """A running server and the people of the test."""

    base_url: str
    app: FastAPI
    sessionmaker: SessionMaker
    database_url: str
    admin: dict[str, str]
    agent: dict[str, str]  # member of inbox_a
    outsider: dict[str, str]  # member of inbox_b
    agent_id: str
    inbox_a: str
    inbox_b: str

    @property
    def hub(self) -> StreamHub:
        hub: StreamHub = self.app.state.stream_hub
        return hub

    @contextlib.asynccontextmanager
    async def stream(
        self,
        headers: dict[str, str],
        *,
        last_event_id: str | None = None,
        params: dict[str, str] | None = None,
    ) -> AsyncIterator[Stream]:
        """An open stream; leaving the block disconnects it. Its first message is checked."""
        headers = dict(headers)
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        timeout = httpx.Timeout(WAIT, read=None)
        async with (
            httpx.AsyncClient(base_url=self.base_url, timeout=timeout) as http,
            http.stream("GET", "/v1/events/stream", headers=headers, params=params) as response,
        ):
            assert response.status_code == 200, await response.aread()
            stream = Stream(response)
            reader = asyncio.create_task(stream.read())
            try:
                first = await stream.next_message()
                assert first.fields.get("retry") == "2000"
                assert first.id
                yield stream
            finally:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=WAIT) as http:
            return await http.get(path, **kwargs)

    async def emit(
        self, event_type: EventType = EventType.NOTE_CREATED, *, inbox_id: str | None = None
    ) -> str:
        return await emit_committed(self.sessionmaker, event_type, inbox_id=inbox_id)

    async def wait_listening(self) -> None:
        await asyncio.wait_for(self.hub.listening.wait(), WAIT)


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the test process keeps its own."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


Start = Callable[..., Awaitable[Live]]


@pytest.fixture
async def start(committed_db: CommittedDb) -> AsyncIterator[Start]:
    """Start a server with these Settings overrides; all are stopped when the test ends."""
    async with transaction(committed_db.sessionmaker) as session:
        admin = await make_user(session, role="admin")
        agent = await make_user(session)
        outsider = await make_user(session)
        inbox_a = await make_inbox(session, members=(agent,))
        inbox_b = await make_inbox(session, members=(outsider,))
        keys = [await make_key(session, user) for user in (admin, agent, outsider)]
    running: list[tuple[FastAPI, uvicorn.Server, asyncio.Task[None]]] = []

    async def start(**overrides: Any) -> Live:
        settings = Settings(
            **{
                "database_url": committed_db.url,
                "rate_limit_per_minute": 0,
                "sse_poll_seconds": 2.0,
                **overrides,
            }
        )
        app = create_app(settings, sessionmaker=committed_db.sessionmaker, clock=FixedClock())
        port = _free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", ws="none")
        server = _Server(config)
        task = asyncio.create_task(server.serve())
        running.append((app, server, task))
        async with asyncio.timeout(WAIT):
            while not server.started:
                assert not task.done(), "the server did not start"
                await asyncio.sleep(0.01)
        return Live(
            base_url=f"http://127.0.0.1:{port}",
            app=app,
            sessionmaker=committed_db.sessionmaker,
            database_url=committed_db.url,
            admin=bearer(keys[0]),
            agent=bearer(keys[1]),
            outsider=bearer(keys[2]),
            agent_id=agent.id,
            inbox_a=inbox_a.id,
            inbox_b=inbox_b.id,
        )

    yield start
    for _, server, _ in running:
        server.should_exit = True
    await asyncio.wait_for(asyncio.gather(*(task for _, _, task in running)), WAIT)


@pytest.fixture
async def live(start: Start) -> Live:
    return await start()


class TestStreamEvents:
    async def test_answers_with_sse_headers_and_retry_first(self, live: Live) -> None:
        async with (
            httpx.AsyncClient(base_url=live.base_url, timeout=WAIT) as http,
            http.stream("GET", "/v1/events/stream", headers=live.admin) as response,
        ):
            assert response.status_code == 200
            assert response.headers["content-type"] == "text/event-stream"
            assert response.headers["cache-control"] == "no-cache"
            assert response.headers["x-accel-buffering"] == "no"
            lines = response.aiter_lines()
            assert await anext(lines) == "retry: 2000"
            assert (await anext(lines)).startswith("id: ")
            assert await anext(lines) == ""

    async def test_event_has_id_type_and_the_feed_envelope(self, live: Live) -> None:
        async with live.stream(live.admin) as stream:
            async with transaction(live.sessionmaker) as session:
                event = await emit(
                    session,
                    EventType.CONVERSATION_ASSIGNED,
                    {"assignee_id": "usr_x"},
                    now=NOW,
                    inbox_id=live.inbox_a,
                    conversation_id="cnv_1",
                )
            message = await stream.next_event()
        assert message.event == "conversation.assigned"
        assert message.id
        feed = await live.get("/v1/events", params={"limit": 200}, headers=live.admin)
        [item] = [i for i in feed.json()["items"] if i["id"] == event.public_id]
        assert message.data == item
        assert message.data["created_at"] == "2026-01-05T09:00:00Z"

    async def test_a_new_stream_starts_now_not_at_the_beginning(self, live: Live) -> None:
        await live.emit()
        async with live.stream(live.admin) as stream:
            new = await live.emit()
            assert await stream.event_ids(1) == [new]
            await stream.assert_quiet()

    async def test_without_a_key_is_401(self, live: Live) -> None:
        response = await live.get("/v1/events/stream")
        assert response.status_code == 401
        assert response.headers["content-type"].startswith("application/problem+json")

    async def test_unknown_type_is_422(self, live: Live) -> None:
        response = await live.get(
            "/v1/events/stream", params={"types": "note.created,no.such"}, headers=live.admin
        )
        assert response.status_code == 422
        assert response.headers["content-type"].startswith("application/problem+json")
        body = response.json()
        assert "no.such" in body["detail"]
        assert body["errors"][0]["loc"] == ["query", "types"]

    @pytest.mark.parametrize(
        "value",
        [
            pytest.param("not-a-cursor", id="garbage"),
            pytest.param(raw_cursor([1]), id="wrong-arity"),
            pytest.param(raw_cursor([-1, 0]), id="negative"),
            pytest.param(raw_cursor([0, 2**63]), id="too-large"),
        ],
    )
    async def test_malformed_last_event_id_is_422(self, live: Live, value: str) -> None:
        response = await live.get(
            "/v1/events/stream", headers={**live.admin, "Last-Event-ID": value}
        )
        assert response.status_code == 422, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["errors"][0]["loc"] == ["header", "Last-Event-ID"]

        response = await live.get(
            "/v1/events/stream", params={"last_event_id": value}, headers=live.admin
        )
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["loc"] == ["query", "last_event_id"]


class TestResume:
    async def test_reconnecting_with_last_event_id_gets_exactly_what_was_missed(
        self, live: Live
    ) -> None:
        async with live.stream(live.admin) as steady:
            async with live.stream(live.admin) as leaving:
                first = [await live.emit() for _ in range(3)]
                assert await leaving.event_ids(3) == first
                assert await steady.event_ids(3) == first
                resume_at = leaving.events[-1].id
                assert resume_at
            # disconnected: these happen while it is away
            missed = [await live.emit() for _ in range(3)]
            assert await steady.event_ids(3) == missed
            async with live.stream(live.admin, last_event_id=resume_at) as back:
                assert await back.event_ids(3) == missed
                later = await live.emit()
                assert await back.event_ids(1) == [later]  # nothing twice in between
                await back.assert_quiet()
            assert await steady.event_ids(1) == [later]
        assert [m.data["id"] for m in steady.events] == [*first, *missed, later]

    async def test_last_event_id_query_is_a_fallback_and_the_header_wins(self, live: Live) -> None:
        async with live.stream(live.admin) as stream:
            ids = [await live.emit() for _ in range(3)]
            assert await stream.event_ids(3) == ids
        cursors = [m.id or "" for m in stream.events]
        async with live.stream(live.admin, params={"last_event_id": cursors[0]}) as resumed:
            assert await resumed.event_ids(2) == ids[1:]
        async with live.stream(
            live.admin, last_event_id=cursors[1], params={"last_event_id": cursors[0]}
        ) as resumed:
            assert await resumed.event_ids(1) == ids[2:]
            await resumed.assert_quiet()

    async def test_event_ids_are_feed_cursors(self, live: Live) -> None:
        async with live.stream(live.admin) as stream:
            ids = [await live.emit() for _ in range(3)]
            assert await stream.event_ids(3) == ids
        response = await live.get(
            "/v1/events", params={"after": stream.events[0].id}, headers=live.admin
        )
        assert [item["id"] for item in response.json()["items"]] == ids[1:]

    async def test_the_first_id_resumes_a_stream_that_saw_no_event(self, live: Live) -> None:
        async with (
            httpx.AsyncClient(base_url=live.base_url, timeout=WAIT) as http,
            http.stream("GET", "/v1/events/stream", headers=live.admin) as response,
        ):
            lines = response.aiter_lines()
            assert await anext(lines) == "retry: 2000"
            start_id = (await anext(lines)).removeprefix("id: ")
        missed = await live.emit()
        async with live.stream(live.admin, last_event_id=start_id) as resumed:
            assert await resumed.event_ids(1) == [missed]


class TestLateCommit:
    async def test_an_event_committed_late_by_an_older_transaction_is_delivered(
        self, live: Live
    ) -> None:
        async with live.stream(live.admin) as stream:
            async with live.sessionmaker() as a:
                event_a = await emit(a, EventType.NOTE_CREATED, {"tx": "A"}, now=NOW)
                b = await live.emit()
                assert event_a.id < int(b.removeprefix("evt_"))
                await stream.assert_quiet()  # B waits behind A, which may still commit
                await a.commit()
            assert await stream.event_ids(2) == [event_a.public_id, b]
            await stream.assert_quiet()

    async def test_an_older_transaction_ending_without_events_releases_waiting_ones(
        self, start: Start
    ) -> None:
        # No notification comes when the holder ends: the stream's own re-read finds B.
        live = await start(sse_poll_seconds=0.2)
        async with live.stream(live.admin) as stream:
            async with live.sessionmaker() as holder:
                await holder.execute(text("SELECT pg_current_xact_id()"))
                b = await live.emit()
                await stream.assert_quiet()
                await holder.rollback()
            assert await stream.event_ids(1) == [b]

    async def test_many_interleaved_writers_skip_nothing(self, live: Live) -> None:
        async with live.stream(live.admin) as stream:
            sessions = [live.sessionmaker() for _ in range(3)]
            try:
                for session in sessions:  # each takes its transaction id first
                    await session.execute(text("SELECT pg_current_xact_id()"))
                emitted = [
                    (await emit(s, EventType.NOTE_CREATED, {}, now=NOW)).public_id
                    for s in reversed(sessions)
                ]
                for session in (sessions[1], sessions[0], sessions[2]):
                    await session.commit()
            finally:
                for session in sessions:
                    await session.close()
            got = await stream.event_ids(3)
            assert sorted(got) == sorted(emitted)
            assert got == list(reversed(emitted))  # transaction order, not id order
            await stream.assert_quiet()


class TestScoping:
    async def test_agent_sees_only_their_inboxes_and_admin_everything(self, live: Live) -> None:
        async with live.stream(live.agent) as agent, live.stream(live.admin) as admin:
            other = await live.emit(inbox_id=live.inbox_b)
            nowhere = await live.emit(inbox_id=None)
            mine = await live.emit(inbox_id=live.inbox_a)
            assert await agent.event_ids(1) == [mine]
            assert await admin.event_ids(3) == [other, nowhere, mine]
            await agent.assert_quiet()
        assert {m.data["inbox_id"] for m in agent.events} == {live.inbox_a}

    async def test_types_keeps_only_the_listed_types(self, live: Live) -> None:
        async with live.stream(live.admin, params={"types": "sla.breached, note.created"}) as s:
            await live.emit(EventType.CONVERSATION_ASSIGNED)
            breach = await live.emit(EventType.SLA_BREACHED)
            await live.emit(EventType.SLA_WARNING)
            note = await live.emit(EventType.NOTE_CREATED)
            assert await s.event_ids(2) == [breach, note]
            await s.assert_quiet()


class TestWaking:
    async def test_keep_alive_comment_when_idle(self, start: Start) -> None:
        live = await start(sse_keepalive_seconds=0.2)
        async with live.stream(live.admin) as stream:
            for _ in range(2):
                message = await stream.next_message(5)
                assert message.comments == ["keep-alive"]
                assert not message.fields

    async def test_a_notification_wakes_the_stream_before_the_poll_interval(
        self, start: Start
    ) -> None:
        live = await start(sse_poll_seconds=60)
        async with live.stream(live.admin) as stream:
            await live.wait_listening()
            first = await live.emit()
            assert await stream.event_ids(1) == [first]

            # The listener's connection dies: it reconnects and keeps waking streams.
            old_pid = await _listener_pid(live)
            await _admin_sql(live, "SELECT pg_terminate_backend($1)", old_pid)
            async with asyncio.timeout(WAIT):
                while await _listener_pid(live) in (None, old_pid):  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            await live.wait_listening()
            second = await live.emit()
            assert await stream.event_ids(1) == [second]

    async def test_polling_alone_delivers_when_the_listener_cannot_connect(
        self, start: Start
    ) -> None:
        # The app reads through the test's sessionmaker; only the listener uses this URL.
        live = await start(
            sse_poll_seconds=0.2, database_url="postgresql+asyncpg://nobody@127.0.0.1:1/none"
        )
        async with live.stream(live.admin) as stream:
            event = await live.emit()
            assert await stream.event_ids(1) == [event]
        assert not live.hub.listening.is_set()

    async def test_one_listener_connection_for_all_streams(self, live: Live) -> None:
        async with live.stream(live.admin) as one, live.stream(live.agent) as two:
            await live.wait_listening()
            event = await live.emit(inbox_id=live.inbox_a)
            assert await one.event_ids(1) == [event]
            assert await two.event_ids(1) == [event]
            count = await _admin_sql(
                live,
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE application_name = $1 AND datname = current_database()",
                LISTENER_APPLICATION_NAME,
            )
            assert count == 1


class TestEndings:
    async def test_disconnecting_unsubscribes(self, live: Live) -> None:
        async with live.stream(live.admin):
            assert live.hub.stream_count == 1
        async with asyncio.timeout(WAIT):
            while live.hub.stream_count:  # noqa: ASYNC110 (the hub has only a count)
                await asyncio.sleep(0.02)

    async def test_server_stop_ends_open_streams(self, live: Live) -> None:
        async with live.stream(live.admin) as stream:
            live.hub.stop_streams()
            await stream.assert_ends()

    async def test_revoking_the_key_ends_the_stream(self, start: Start) -> None:
        live = await start(sse_auth_recheck_seconds=0.2)
        async with live.stream(live.agent) as stream:
            await asyncio.sleep(0.5)  # a few re-checks pass with a valid key
            event = await live.emit(inbox_id=live.inbox_a)
            assert await stream.event_ids(1) == [event]
            async with httpx.AsyncClient(base_url=live.base_url, timeout=WAIT) as http:
                [key] = (await http.get("/v1/api-keys", headers=live.agent)).json()["items"]
                revoked = await http.delete(f"/v1/api-keys/{key['id']}", headers=live.agent)
                assert revoked.status_code == 204
            await stream.assert_ends()

    async def test_deleting_the_user_ends_the_stream(self, start: Start) -> None:
        live = await start(sse_auth_recheck_seconds=0.2)
        async with live.stream(live.agent) as stream:
            async with httpx.AsyncClient(base_url=live.base_url, timeout=WAIT) as http:
                deleted = await http.delete(f"/v1/users/{live.agent_id}", headers=live.admin)
                assert deleted.status_code == 204
            await stream.assert_ends()


class TestEphemeral:
    async def _publish(self, live: Live, *, commit: bool = True, state: str = "viewing") -> None:
        async with live.sessionmaker() as session:
            await publish_ephemeral(
                session,
                EventType.PRESENCE_CHANGED,
                {"user_id": live.agent_id, "state": state},
                inbox_id=live.inbox_a,
                conversation_id="cnv_1",
                now=NOW,
            )
            if commit:
                await session.commit()
            else:
                await session.rollback()

    async def test_presence_reaches_the_inbox_members_only(self, live: Live) -> None:
        async with (
            live.stream(live.agent) as agent,
            live.stream(live.outsider) as outsider,
            live.stream(live.admin) as admin,
            live.stream(live.agent, params={"types": "note.created"}) as notes_only,
        ):
            await live.wait_listening()
            await self._publish(live)
            message = await agent.next_event()
            assert message.event == "presence.changed"
            assert message.id is None  # not resumable
            assert message.data["id"].startswith("eph_")
            assert message.data["inbox_id"] == live.inbox_a
            assert message.data["conversation_id"] == "cnv_1"
            assert message.data["data"] == {"user_id": live.agent_id, "state": "viewing"}
            assert (await admin.next_event()).event == "presence.changed"
            # Sent after the presence: if the outsider (or a stream filtering it out) were
            # sent the presence, it would come first.
            in_b = await live.emit(inbox_id=live.inbox_b)
            assert await outsider.event_ids(1) == [in_b]
            note = await live.emit(inbox_id=live.inbox_a)
            assert await notes_only.event_ids(1) == [note]

    async def test_a_rolled_back_presence_is_never_sent(self, live: Live) -> None:
        async with live.stream(live.agent) as agent:
            await live.wait_listening()
            await self._publish(live, commit=False, state="composing")
            await self._publish(live, state="viewing")
            message = await agent.next_event()
            assert message.data["data"]["state"] == "viewing"

    async def test_too_large_data_is_refused(self, live: Live) -> None:
        async with live.sessionmaker() as session:
            with pytest.raises(ValueError, match="send ids"):
                await publish_ephemeral(
                    session,
                    EventType.PRESENCE_CHANGED,
                    {"blob": "x" * 8000},
                    inbox_id=live.inbox_a,
                    conversation_id=None,
                    now=NOW,
                )


async def _admin_sql(live: Live, sql: str, *args: Any) -> Any:
    connection = await asyncpg.connect(plain_dsn(live.database_url))
    try:
        return await connection.fetchval(sql, *args)
    finally:
        await connection.close()


async def _listener_pid(live: Live) -> int | None:
    pid: int | None = await _admin_sql(
        live,
        "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND datname = "
        "current_database()",
        LISTENER_APPLICATION_NAME,
    )
    return pid
