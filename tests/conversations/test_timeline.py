"""`GET /v1/conversations/{id}/timeline` and `/messages`: one ordered stream, keyset pages."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from inbox_service.conversations.models import Message, Note
from inbox_service.core.clock import FixedClock
from inbox_service.core.db import SessionMaker, transaction
from inbox_service.core.ids import new_id
from inbox_service.ingest.mime import parse_message
from inbox_service.ingest.store import InboxContext, Incoming, store_batch
from tests.conftest import Team

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)  # the FixedClock's start
TEAM_ADDRESS = "support@example.com"
_seq = itertools.count(1)


def _mail(
    *, sender: str, to: str, subject: str, at: datetime, message_id: str, in_reply_to: str | None
) -> bytes:
    headers = [
        f"From: {sender}",
        f"To: {to}",
        f"Subject: {subject}",
        f"Date: {at.strftime('%a, %d %b %Y %H:%M:%S +0000')}",
        f"Message-ID: <{message_id}>",
    ]
    if in_reply_to:
        headers.append(f"In-Reply-To: <{in_reply_to}>")
    return ("\r\n".join(headers) + "\r\n\r\nSome words about the printer.\r\n").encode()


@dataclass
class Thread:
    conversation_id: str
    messages: list[str]  # ids, oldest first
    note_id: str


@pytest.fixture
async def thread(db: SessionMaker, team: Team) -> Thread:
    """Customer at -3h, our reply at -2h, a note at -90m, customer again at -1h."""
    n = next(_seq)
    ids = [f"tl{n}.{k}@customer.test" for k in range(3)]
    customer = "Ana Lopez <ana@customer.test>"
    raws = [
        _mail(
            sender=customer,
            to=TEAM_ADDRESS,
            subject="Printer on fire",
            at=NOW - timedelta(hours=3),
            message_id=ids[0],
            in_reply_to=None,
        ),
        _mail(
            sender=TEAM_ADDRESS,
            to=customer,
            subject="Re: Printer on fire",
            at=NOW - timedelta(hours=2),
            message_id=ids[1],
            in_reply_to=ids[0],
        ),
        _mail(
            sender=customer,
            to=TEAM_ADDRESS,
            subject="Re: Printer on fire",
            at=NOW - timedelta(hours=1),
            message_id=ids[2],
            in_reply_to=ids[1],
        ),
    ]
    async with transaction(db) as session:
        context = InboxContext(inbox_id=team.inbox_a, team_addresses=frozenset({TEAM_ADDRESS}))
        await store_batch(
            session, context, [Incoming(raw=r, parsed=parse_message(r)) for r in raws], now=NOW
        )
        rows = {
            m.message_id: m
            for m in await session.scalars(select(Message).where(Message.message_id.in_(ids)))
        }
        messages = [rows[i] for i in ids]
        conversation_id = messages[0].conversation_id
        assert conversation_id is not None
        assert {m.conversation_id for m in messages} == {conversation_id}
        assert [m.direction for m in messages] == ["inbound", "outbound", "inbound"]
        note = Note(
            id=new_id("note"),
            conversation_id=conversation_id,
            inbox_id=team.inbox_a,
            author_id=team.agent_id,
            body="Called them: it is really on fire",
            mentions=[team.admin_id],
            created_at=NOW - timedelta(minutes=90),
        )
        session.add(note)
    return Thread(
        conversation_id=conversation_id, messages=[m.id for m in messages], note_id=note.id
    )


async def timeline_walk(
    client: httpx.AsyncClient, cid: str, headers: dict[str, str], limit: int, between: Any = None
) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        response = await client.get(
            f"/v1/conversations/{cid}/timeline", params=params, headers=headers
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert len(body["items"]) <= limit
        items += body["items"]
        pages += 1
        if pages == 1 and between is not None:
            await between()
        cursor = body["next_cursor"]
        if cursor is None:
            return items
        assert pages < 50


async def act(
    client: httpx.AsyncClient, thread: Thread, body: dict[str, Any], headers: dict[str, str]
) -> None:
    response = await client.patch(
        f"/v1/conversations/{thread.conversation_id}", json=body, headers=headers
    )
    assert response.status_code == 200, response.text


class TestTimeline:
    async def test_messages_note_and_activities_in_time_order_with_actors(
        self, client: httpx.AsyncClient, team: Team, thread: Thread, clock: FixedClock
    ) -> None:
        await act(client, thread, {"status": "pending"}, team.agent_headers)
        clock.advance(minutes=1)
        await act(client, thread, {"priority": "high"}, team.admin_headers)
        response = await client.get(
            f"/v1/conversations/{thread.conversation_id}/timeline", headers=team.agent_headers
        )
        assert response.status_code == 200
        body = response.json()
        assert body["next_cursor"] is None
        items = body["items"]
        m1, m2, m3 = thread.messages
        assert [(i["type"], i.get("kind"), i["actor_id"]) for i in items] == [
            ("message", None, None),
            ("message", None, None),
            ("note", None, team.agent_id),
            ("message", None, None),
            ("activity", "status_changed", team.agent_id),
            ("activity", "priority_changed", team.admin_id),
        ]
        assert [i["id"] for i in items[:4]] == [m1, m2, thread.note_id, m3]
        assert [datetime.fromisoformat(i["at"]) for i in items] == [
            NOW - timedelta(hours=3),
            NOW - timedelta(hours=2),
            NOW - timedelta(minutes=90),
            NOW - timedelta(hours=1),
            NOW,
            NOW + timedelta(minutes=1),
        ]
        assert [items[k]["data"]["direction"] for k in (0, 1, 3)] == [
            "inbound",
            "outbound",
            "inbound",
        ]
        assert items[0]["data"]["from"] == "ana@customer.test"
        assert items[2]["data"] == {
            "body": "Called them: it is really on fire",
            "mentions": [team.admin_id],
        }
        assert items[4]["data"]["status"] == "pending"
        assert items[5]["data"]["priority"] == "high"

    @pytest.mark.parametrize("limit", [1, 2, 4])
    async def test_pages_walk_every_entry_once_in_order(
        self,
        client: httpx.AsyncClient,
        team: Team,
        thread: Thread,
        clock: FixedClock,
        limit: int,
    ) -> None:
        await act(client, thread, {"status": "pending"}, team.agent_headers)
        # Two changes in one request share their time: the order must still be total.
        await act(client, thread, {"status": "resolved", "priority": "low"}, team.agent_headers)
        clock.advance(minutes=1)
        await act(client, thread, {"status": "open"}, team.admin_headers)
        full = (
            await client.get(
                f"/v1/conversations/{thread.conversation_id}/timeline",
                params={"limit": 200},
                headers=team.agent_headers,
            )
        ).json()["items"]
        assert len(full) == 4 + 4
        walked = await timeline_walk(
            client, thread.conversation_id, team.agent_headers, limit=limit
        )
        assert walked == full
        assert len({i["id"] for i in walked}) == len(walked)
        keys = [(i["at"], i["type"], i["id"]) for i in walked]
        assert [datetime.fromisoformat(k[0]) for k in keys] == sorted(
            datetime.fromisoformat(k[0]) for k in keys
        )

    async def test_entries_added_during_a_walk_appear_only_ahead_of_the_cursor(
        self,
        client: httpx.AsyncClient,
        team: Team,
        thread: Thread,
        db: SessionMaker,
        clock: FixedClock,
    ) -> None:
        async def change() -> None:
            async with transaction(db) as session:
                behind = Note(
                    id=new_id("note"),
                    conversation_id=thread.conversation_id,
                    inbox_id=team.inbox_a,
                    author_id=team.admin_id,
                    body="backdated",
                    mentions=[],
                    created_at=NOW - timedelta(hours=4),
                )
                session.add(behind)
            clock.advance(minutes=5)
            await act(client, thread, {"status": "resolved"}, team.agent_headers)

        walked = await timeline_walk(
            client, thread.conversation_id, team.agent_headers, limit=2, between=change
        )
        m1, m2, m3 = thread.messages
        assert [i["id"] for i in walked[:4]] == [m1, m2, thread.note_id, m3]
        assert [(i["type"], i["kind"]) for i in walked[4:]] == [("activity", "status_changed")]
        assert "backdated" not in str(walked)

    async def test_garbage_cursor_is_422(
        self, client: httpx.AsyncClient, team: Team, thread: Thread
    ) -> None:
        for cursor in ("nope", "WyJ4Il0", "WzEsMiwzXQ"):  # not b64 json, ["x"], [1,2,3]
            response = await client.get(
                f"/v1/conversations/{thread.conversation_id}/timeline",
                params={"cursor": cursor},
                headers=team.agent_headers,
            )
            assert response.status_code == 422, (cursor, response.text)

    async def test_other_inbox_timeline_is_404(
        self, client: httpx.AsyncClient, team: Team, thread: Thread
    ) -> None:
        response = await client.get(
            f"/v1/conversations/{thread.conversation_id}/timeline", headers=team.outsider_headers
        )
        assert response.status_code == 404
        assert "Printer" not in response.text
        assert "on fire" not in response.text


class TestListMessages:
    async def test_oldest_first_across_pages(
        self, client: httpx.AsyncClient, team: Team, thread: Thread
    ) -> None:
        path = f"/v1/conversations/{thread.conversation_id}/messages"
        first = await client.get(path, params={"limit": 2}, headers=team.agent_headers)
        assert first.status_code == 200
        page1 = first.json()
        assert page1["next_cursor"] is not None
        second = await client.get(
            path, params={"limit": 2, "cursor": page1["next_cursor"]}, headers=team.agent_headers
        )
        page2 = second.json()
        assert page2["next_cursor"] is None
        items = page1["items"] + page2["items"]
        assert [m["id"] for m in items] == thread.messages
        assert [m["direction"] for m in items] == ["inbound", "outbound", "inbound"]
        assert items[0]["from"] == {"name": "Ana Lopez", "address": "ana@customer.test"}
        assert items[0]["subject"] == "Printer on fire"
        assert [m["threaded_by"] for m in items] == ["new", "in_reply_to", "in_reply_to"]

    async def test_one_page_when_it_fits(
        self, client: httpx.AsyncClient, team: Team, thread: Thread
    ) -> None:
        response = await client.get(
            f"/v1/conversations/{thread.conversation_id}/messages", headers=team.admin_headers
        )
        body = response.json()
        assert [m["id"] for m in body["items"]] == thread.messages
        assert body["next_cursor"] is None

    async def test_garbage_cursor_is_422(
        self, client: httpx.AsyncClient, team: Team, thread: Thread
    ) -> None:
        response = await client.get(
            f"/v1/conversations/{thread.conversation_id}/messages",
            params={"cursor": "garbage"},
            headers=team.agent_headers,
        )
        assert response.status_code == 422

    async def test_other_inbox_messages_are_404(
        self, client: httpx.AsyncClient, team: Team, thread: Thread
    ) -> None:
        response = await client.get(
            f"/v1/conversations/{thread.conversation_id}/messages", headers=team.outsider_headers
        )
        assert response.status_code == 404
        assert "Printer" not in response.text
