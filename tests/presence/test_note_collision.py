"""Notes with `expected_last_message_id`: refused (409, listing what is new) when the
customer wrote again since the message the agent last saw."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import func, select

from inbox_service.conversations.models import Message, Note
from inbox_service.core.clock import FixedClock
from inbox_service.core.db import SessionMaker, transaction
from tests.assignment.support import ingest, mail
from tests.conftest import Team


async def message_id_of(db: SessionMaker, header_id: str) -> str:
    async with transaction(db) as session:
        found = await session.scalar(select(Message.id).where(Message.message_id == header_id))
        assert found is not None
        return found


async def notes(db: SessionMaker) -> int:
    async with transaction(db) as session:
        return int(await session.scalar(select(func.count()).select_from(Note)) or 0)


@pytest.fixture
async def thread(db: SessionMaker, team: Team, clock: FixedClock) -> tuple[str, str]:
    """(conversation id, id of its first message)."""
    [cid] = await ingest(db, team.inbox_a, [mail("n1")], now=clock.now())
    return cid, await message_id_of(db, "n1@customer.test")


class TestNoteCollision:
    async def test_a_customer_message_since_is_409_listing_it_and_no_note(
        self,
        client: httpx.AsyncClient,
        team: Team,
        db: SessionMaker,
        clock: FixedClock,
        thread: tuple[str, str],
    ) -> None:
        cid, first = thread
        clock.advance(minutes=1)
        await ingest(
            db, team.inbox_a, [mail("n2", in_reply_to="n1@customer.test")], now=clock.now()
        )
        newer = await message_id_of(db, "n2@customer.test")

        response = await client.post(
            f"/v1/conversations/{cid}/notes",
            json={"body": "I'll take it", "expected_last_message_id": first},
            headers=team.agent_headers,
        )
        assert response.status_code == 409
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert problem["type"].endswith("/reply-collision")
        assert [m["id"] for m in problem["unseen_messages"]] == [newer]
        assert problem["unseen_messages"][0]["direction"] == "inbound"
        assert await notes(db) == 0

        # Having seen it, the agent writes the note.
        ok = await client.post(
            f"/v1/conversations/{cid}/notes",
            json={"body": "I'll take it", "expected_last_message_id": newer},
            headers=team.agent_headers,
        )
        assert ok.status_code == 201, ok.text
        assert await notes(db) == 1

    async def test_a_late_message_with_an_old_date_is_still_new(
        self,
        client: httpx.AsyncClient,
        team: Team,
        db: SessionMaker,
        clock: FixedClock,
        thread: tuple[str, str],
    ) -> None:
        cid, first = thread
        clock.advance(minutes=1)
        late = mail("n0", in_reply_to="n1@customer.test").replace(b"Mon, 02 Mar", b"Sun, 01 Mar")
        await ingest(db, team.inbox_a, [late], now=clock.now())
        response = await client.post(
            f"/v1/conversations/{cid}/notes",
            json={"body": "x", "expected_last_message_id": first},
            headers=team.agent_headers,
        )
        assert response.status_code == 409
        assert [m["id"] for m in response.json()["unseen_messages"]] == [
            await message_id_of(db, "n0@customer.test")
        ]

    async def test_without_an_expectation_there_is_no_check(
        self,
        client: httpx.AsyncClient,
        team: Team,
        db: SessionMaker,
        clock: FixedClock,
        thread: tuple[str, str],
    ) -> None:
        cid, _ = thread
        clock.advance(minutes=1)
        await ingest(
            db, team.inbox_a, [mail("n3", in_reply_to="n1@customer.test")], now=clock.now()
        )
        response = await client.post(
            f"/v1/conversations/{cid}/notes", json={"body": "fyi"}, headers=team.agent_headers
        )
        assert response.status_code == 201

    async def test_a_message_of_another_conversation_is_422(
        self,
        client: httpx.AsyncClient,
        team: Team,
        db: SessionMaker,
        clock: FixedClock,
        thread: tuple[str, str],
    ) -> None:
        cid, _ = thread
        await ingest(db, team.inbox_b, [mail("other")], now=clock.now())
        for expected in (await message_id_of(db, "other@customer.test"), "msg_nope"):
            response = await client.post(
                f"/v1/conversations/{cid}/notes",
                json={"body": "x", "expected_last_message_id": expected},
                headers=team.agent_headers,
            )
            assert response.status_code == 422
            assert response.json()["errors"][0]["loc"] == ["body", "expected_last_message_id"]
        assert await notes(db) == 0
