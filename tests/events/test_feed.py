"""GET /v1/events: the cursor feed that never skips an event committed late.

These tests use real commits on separate connections (`committed_db`), because the
property under test is about transactions that overlap and commit out of id order.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from inbox_service.app import create_app
from inbox_service.core.clock import FixedClock
from inbox_service.core.config import Settings
from inbox_service.core.db import SessionMaker, create_engine, create_sessionmaker, transaction
from inbox_service.core.events import EventType, emit
from inbox_service.core.pagination import decode_cursor
from tests.conftest import CommittedDb
from tests.support.factories import NOW, bearer, make_inbox, make_key, make_user


@dataclass
class Consumer:
    """A poller that keeps its place with `next_cursor`, as an automation script would."""

    http: httpx.AsyncClient
    headers: dict[str, str]
    types: str | None = None
    limit: int = 100
    cursor: str | None = None
    seen: list[str] = field(default_factory=list)
    polled: asyncio.Event = field(default_factory=asyncio.Event)

    async def poll(self) -> list[str]:
        """One GET; the event ids it returned (also appended to `seen`)."""
        params: dict[str, Any] = {"limit": self.limit}
        if self.cursor is not None:
            params["after"] = self.cursor
        if self.types is not None:
            params["types"] = self.types
        response = await self.http.get("/v1/events", params=params, headers=self.headers)
        assert response.status_code == 200, response.text
        body = response.json()
        assert isinstance(body["next_cursor"], str)
        assert body["next_cursor"]
        self.cursor = body["next_cursor"]
        ids = [item["id"] for item in body["items"]]
        self.seen.extend(ids)
        self.polled.set()
        return ids

    async def drain(self) -> list[str]:
        """Poll until a page comes back short: everything currently visible."""
        got: list[str] = []
        while True:
            ids = await self.poll()
            got.extend(ids)
            if len(ids) < self.limit:
                return got


@dataclass
class FeedEnv:
    http: httpx.AsyncClient
    database_url: str
    sessionmaker: SessionMaker
    admin_headers: dict[str, str]

    def consumer(self, **kwargs: Any) -> Consumer:
        return Consumer(self.http, kwargs.pop("headers", self.admin_headers), **kwargs)


@pytest.fixture
async def env(committed_db: CommittedDb) -> AsyncIterator[FeedEnv]:
    app = create_app(
        Settings(rate_limit_per_minute=0),
        sessionmaker=committed_db.sessionmaker,
        clock=FixedClock(),
    )
    async with transaction(committed_db.sessionmaker) as session:
        admin = await make_user(session, role="admin")
        token = await make_key(session, admin)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield FeedEnv(
            http=http,
            database_url=committed_db.url,
            sessionmaker=committed_db.sessionmaker,
            admin_headers=bearer(token),
        )


async def emit_committed(
    sessionmaker: SessionMaker,
    event_type: EventType = EventType.NOTE_CREATED,
    *,
    inbox_id: str | None = None,
    data: dict[str, Any] | None = None,
) -> str:
    """Emit one event in a transaction of its own; its public id."""
    async with transaction(sessionmaker) as session:
        event = await emit(session, event_type, data or {}, now=NOW, inbox_id=inbox_id)
    return event.public_id


def raw_cursor(values: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


class TestLateCommit:
    """Transaction A emits first (lower id) but commits after B."""

    async def test_late_commit_is_delivered_once_and_in_order(self, env: FeedEnv) -> None:
        consumer = env.consumer()
        await consumer.drain()  # start at the current end of the feed

        async with env.sessionmaker() as a, env.sessionmaker() as b:
            event_a = await emit(a, EventType.NOTE_CREATED, {"tx": "A"}, now=NOW)
            assert await consumer.poll() == []  # A is not committed

            event_b = await emit(b, EventType.NOTE_CREATED, {"tx": "B"}, now=NOW)
            assert event_a.id < event_b.id
            assert await consumer.poll() == []

            await b.commit()
            # B is committed, but A (older, still running) might still commit an event
            # before it: B waits behind A instead of moving the cursor past A.
            assert await consumer.poll() == []
            assert await consumer.poll() == []

            await a.commit()
            assert await consumer.poll() == [event_a.public_id, event_b.public_id]
            assert await consumer.poll() == []

        assert consumer.seen == [event_a.public_id, event_b.public_id]

    async def test_later_commit_is_not_handed_out_while_an_older_transaction_runs(
        self, env: FeedEnv
    ) -> None:
        # The naive "id > last id" feed fails this: it returns B at once, moves the
        # cursor past A's id and never returns A.
        consumer = env.consumer()
        await consumer.drain()
        async with env.sessionmaker() as a:
            await emit(a, EventType.NOTE_CREATED, {"tx": "A"}, now=NOW)
            b_id = await emit_committed(env.sessionmaker, data={"tx": "B"})
            for _ in range(3):
                assert b_id not in await consumer.poll()
            cursor_while_a_runs = consumer.cursor
            await a.rollback()
        # A rolled back: nothing holds B back any more, and A's event never existed.
        assert await consumer.poll() == [b_id]
        assert consumer.cursor != cursor_while_a_runs

    async def test_transaction_with_lower_xid_but_higher_event_id_comes_first(
        self, env: FeedEnv
    ) -> None:
        # A starts writing first (gets the lower transaction id) but emits its event after
        # B emitted and committed: ids say B then A, commit-safe order says A then B.
        consumer = env.consumer()
        await consumer.drain()
        async with env.sessionmaker() as a:
            await a.execute(text("SELECT pg_current_xact_id()"))
            b_id = await emit_committed(env.sessionmaker, data={"tx": "B"})
            assert await consumer.poll() == []
            event_a = await emit(a, EventType.NOTE_CREATED, {"tx": "A"}, now=NOW)
            assert event_a.id > int(b_id.removeprefix("evt_"))
            assert await consumer.poll() == []
            await a.commit()
        assert await consumer.poll() == [event_a.public_id, b_id]
        assert await consumer.poll() == []

    async def test_rolled_back_event_never_appears(self, env: FeedEnv) -> None:
        consumer = env.consumer()
        await consumer.drain()
        async with env.sessionmaker() as a:
            await emit(a, EventType.NOTE_CREATED, {"tx": "A"}, now=NOW)
            await a.rollback()
        b_id = await emit_committed(env.sessionmaker)
        assert await consumer.poll() == [b_id]
        assert await consumer.poll() == []


class TestManyWriters:
    async def test_poller_sees_every_event_exactly_once_in_commit_safe_order(
        self, env: FeedEnv
    ) -> None:
        writers = 20
        rng = random.Random(20260105)
        # A pool of its own: every writer holds a connection with an open transaction.
        engine = create_engine(env.database_url, pool_size=writers + 2)
        writer_sessions = create_sessionmaker(engine)
        consumer = env.consumer(limit=7)  # small pages: paging must not skip either
        await consumer.drain()

        phases = ("begin", "emit", "finish")
        may = {(p, i): asyncio.Event() for p in phases for i in range(writers)}
        did = {(p, i): asyncio.Event() for p in phases for i in range(writers)}
        rolls_back = {i for i in range(writers) if i % 7 == 3}
        ids: dict[int, list[str]] = {}
        sort_key: dict[str, tuple[int, int]] = {}

        async def writer(i: int) -> None:
            async with writer_sessions() as session:
                # Taking the transaction id apart from emitting makes id order differ
                # from transaction order, as when a service writes state before its event.
                await may["begin", i].wait()
                xid = int(await session.scalar(text("SELECT pg_current_xact_id()::text")) or 0)
                did["begin", i].set()
                await may["emit", i].wait()
                first = await emit(session, EventType.NOTE_CREATED, {"writer": i}, now=NOW)
                await asyncio.sleep(0)
                second = await emit(session, EventType.NOTE_CREATED, {"writer": i}, now=NOW)
                ids[i] = [first.public_id, second.public_id]
                sort_key[first.public_id] = (xid, first.id)
                sort_key[second.public_id] = (xid, second.id)
                did["emit", i].set()
                await may["finish", i].wait()
                if i in rolls_back:
                    await session.rollback()
                else:
                    await session.commit()
            did["finish", i].set()

        stop = asyncio.Event()

        async def poller() -> None:
            while not stop.is_set():
                await consumer.poll()
                await asyncio.sleep(0)

        # A random interleaving of every writer's begin → emit → finish, so transactions
        # overlap, emit out of transaction order and finish out of id order.
        schedule: list[tuple[str, int]] = []
        next_phase = dict.fromkeys(range(writers), 0)
        while next_phase:
            i = rng.choice(sorted(next_phase))
            schedule.append((phases[next_phase[i]], i))
            next_phase[i] += 1
            if next_phase[i] == len(phases):
                del next_phase[i]

        tasks = [asyncio.create_task(writer(i)) for i in range(writers)]
        polling = asyncio.create_task(poller())
        try:
            async with asyncio.timeout(60):
                for step in schedule:
                    may[step].set()
                    await did[step].wait()
                    # Let the poller look at the feed in this state at least once: the
                    # first poll to end may have started before the step, the second did not.
                    for _ in range(2):
                        consumer.polled.clear()
                        await consumer.polled.wait()
                await asyncio.gather(*tasks)
                stop.set()
                await polling
        finally:
            stop.set()
            for task in [*tasks, polling]:
                task.cancel()
            await asyncio.gather(*tasks, polling, return_exceptions=True)
            await engine.dispose()

        await consumer.drain()
        committed = {eid for i, pair in ids.items() if i not in rolls_back for eid in pair}
        rolled_back = {eid for i in rolls_back for eid in ids[i]}
        assert len(consumer.seen) == len(set(consumer.seen)), "an event was delivered twice"
        assert set(consumer.seen) == committed
        assert not rolled_back & set(consumer.seen)
        assert consumer.seen == sorted(consumer.seen, key=sort_key.__getitem__)
        # The schedule really did emit out of transaction order.
        by_id = sorted(committed, key=lambda eid: sort_key[eid][1])
        assert by_id != consumer.seen


class TestListEventsPaging:
    async def test_small_pages_return_each_event_once(self, env: FeedEnv) -> None:
        consumer = env.consumer(limit=2)
        await consumer.drain()
        expected = [await emit_committed(env.sessionmaker) for _ in range(5)]
        assert await consumer.poll() == expected[0:2]
        assert await consumer.poll() == expected[2:4]
        assert await consumer.poll() == expected[4:5]
        assert await consumer.poll() == []

    async def test_next_cursor_is_returned_when_empty_and_keeps_the_place(
        self, env: FeedEnv
    ) -> None:
        consumer = env.consumer(types=EventType.SLA_BREACHED.value)
        skipped = await emit_committed(env.sessionmaker)  # filtered out
        assert await consumer.poll() == []
        first_cursor = consumer.cursor
        assert first_cursor
        assert await consumer.poll() == []
        assert consumer.cursor is not None
        # An empty page moves the cursor past what the filter skipped, never before it.
        assert _decoded(consumer.cursor)[0] >= _decoded(first_cursor)[0]
        assert skipped not in consumer.seen

        breach = await emit_committed(env.sessionmaker, EventType.SLA_BREACHED)
        assert await consumer.poll() == [breach]
        assert await consumer.poll() == []
        assert await consumer.poll() == []
        assert consumer.seen == [breach]

    async def test_drained_cursor_returns_nothing_new(self, env: FeedEnv) -> None:
        consumer = env.consumer()
        await emit_committed(env.sessionmaker)
        assert len(await consumer.drain()) >= 1
        assert await consumer.poll() == []
        assert consumer.cursor is not None
        new = await emit_committed(env.sessionmaker)
        assert await consumer.poll() == [new]

    async def test_items_have_the_envelope_fields(self, env: FeedEnv) -> None:
        inbox_id = await _make_inbox(env)
        async with transaction(env.sessionmaker) as session:
            event = await emit(
                session,
                EventType.CONVERSATION_ASSIGNED,
                {"assignee_id": "usr_x"},
                now=NOW,
                inbox_id=inbox_id,
                conversation_id="cnv_1",
            )
        response = await env.http.get(
            "/v1/events", params={"types": "conversation.assigned"}, headers=env.admin_headers
        )
        assert response.status_code == 200, response.text
        assert response.json()["items"] == [
            {
                "id": event.public_id,
                "type": "conversation.assigned",
                "created_at": "2026-01-05T09:00:00Z",
                "inbox_id": inbox_id,
                "conversation_id": "cnv_1",
                "data": {"assignee_id": "usr_x"},
            }
        ]

    async def test_without_a_key_is_401(self, env: FeedEnv) -> None:
        response = await env.http.get("/v1/events")
        assert response.status_code == 401
        assert response.headers["content-type"].startswith("application/problem+json")


class TestListEventsTypes:
    async def test_types_keeps_only_the_listed_types(self, env: FeedEnv) -> None:
        assigned = await emit_committed(env.sessionmaker, EventType.CONVERSATION_ASSIGNED)
        await emit_committed(env.sessionmaker, EventType.NOTE_CREATED)
        breached = await emit_committed(env.sessionmaker, EventType.SLA_BREACHED)
        await emit_committed(env.sessionmaker, EventType.SLA_WARNING)

        consumer = env.consumer(types=" conversation.assigned , sla.breached,")
        assert await consumer.drain() == [assigned, breached]

        response = await env.http.get(
            "/v1/events", params={"types": "sla.warning"}, headers=env.admin_headers
        )
        assert [item["type"] for item in response.json()["items"]] == ["sla.warning"]

    async def test_unknown_type_is_422(self, env: FeedEnv) -> None:
        response = await env.http.get(
            "/v1/events",
            params={"types": "conversation.assigned,no.such_type"},
            headers=env.admin_headers,
        )
        assert response.status_code == 422
        body = response.json()
        assert response.headers["content-type"].startswith("application/problem+json")
        assert "no.such_type" in body["detail"]
        assert body["errors"][0]["loc"] == ["query", "types"]


class TestListEventsCursor:
    @pytest.mark.parametrize(
        "after",
        [
            pytest.param("not-a-cursor", id="garbage"),
            pytest.param("!!!!", id="not-base64"),
            pytest.param(raw_cursor([1]), id="wrong-arity"),
            pytest.param(raw_cursor(["a", "b"]), id="not-numbers"),
            pytest.param(raw_cursor({"xid": 1, "id": 2}), id="not-a-list"),
            pytest.param(raw_cursor([-1, 0]), id="negative-xid"),
            pytest.param(raw_cursor([0, -1]), id="negative-id"),
            pytest.param(raw_cursor([2**64, 0]), id="xid-too-large"),
            pytest.param(raw_cursor([0, 2**63]), id="id-too-large"),
        ],
    )
    async def test_bad_after_is_422(self, env: FeedEnv, after: str) -> None:
        response = await env.http.get(
            "/v1/events", params={"after": after}, headers=env.admin_headers
        )
        assert response.status_code == 422, response.text
        body = response.json()
        assert response.headers["content-type"].startswith("application/problem+json")
        assert body["errors"][0]["loc"] == ["query", "after"]

    async def test_cursor_from_the_feed_is_accepted(self, env: FeedEnv) -> None:
        consumer = env.consumer()
        await consumer.drain()
        await emit_committed(env.sessionmaker)
        assert len(await consumer.poll()) == 1


async def _make_inbox(env: FeedEnv) -> str:
    async with transaction(env.sessionmaker) as session:
        return (await make_inbox(session)).id


class TestListEventsScoping:
    async def test_agent_sees_only_events_of_their_inboxes(self, env: FeedEnv) -> None:
        async with transaction(env.sessionmaker) as session:
            agent = await make_user(session)
            mine = await make_inbox(session, members=(agent,))
            other = await make_inbox(session)
            agent_headers = bearer(await make_key(session, agent))
        mine_id, other_id = mine.id, other.id

        in_mine = await emit_committed(env.sessionmaker, inbox_id=mine_id)
        in_other = await emit_committed(env.sessionmaker, inbox_id=other_id)
        in_none = await emit_committed(env.sessionmaker, inbox_id=None)
        in_mine_again = await emit_committed(env.sessionmaker, inbox_id=mine_id)

        agent_feed = env.consumer(headers=agent_headers)
        items = await _all_items(env.http, agent_headers)
        assert {item["inbox_id"] for item in items} == {mine_id}
        seen = await agent_feed.drain()
        assert in_mine in seen
        assert in_mine_again in seen
        assert in_other not in seen
        assert in_none not in seen

        admin_seen = await env.consumer().drain()
        assert {in_mine, in_other, in_none, in_mine_again} <= set(admin_seen)

    async def test_agent_without_inboxes_sees_nothing(self, env: FeedEnv) -> None:
        async with transaction(env.sessionmaker) as session:
            loner = await make_user(session)
            headers = bearer(await make_key(session, loner))
        inbox_id = await _make_inbox(env)
        await emit_committed(env.sessionmaker, inbox_id=inbox_id)
        await emit_committed(env.sessionmaker)
        consumer = env.consumer(headers=headers)
        assert await consumer.drain() == []
        assert consumer.cursor

    async def test_hidden_events_do_not_hold_back_the_cursor(self, env: FeedEnv) -> None:
        async with transaction(env.sessionmaker) as session:
            agent = await make_user(session)
            mine = await make_inbox(session, members=(agent,))
            other = await make_inbox(session)
            headers = bearer(await make_key(session, agent))
        consumer = env.consumer(headers=headers)
        await consumer.drain()
        await emit_committed(env.sessionmaker, inbox_id=other.id)
        mine_id = await emit_committed(env.sessionmaker, inbox_id=mine.id)
        assert await consumer.poll() == [mine_id]
        assert await consumer.poll() == []


async def _all_items(http: httpx.AsyncClient, headers: dict[str, str]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 200}
        if after is not None:
            params["after"] = after
        response = await http.get("/v1/events", params=params, headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        items.extend(body["items"])
        after = body["next_cursor"]
        if len(body["items"]) < 200:
            return items


def _decoded(cursor: str) -> list[int]:
    return [int(v) for v in decode_cursor(cursor, [int, int])]
