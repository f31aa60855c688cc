"""Tags, tagging conversations, and internal notes with mentions."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import func, select

from inbox_service.core.clock import FixedClock
from inbox_service.core.db import SessionMaker, transaction
from inbox_service.core.events import Event
from inbox_service.ingest.mime import parse_message
from inbox_service.ingest.store import InboxContext, Incoming, store_batch
from tests.conftest import Team

RAW = (
    b"From: Ana <ana@customer.test>\r\nTo: support@example.com\r\nSubject: Refund please\r\n"
    b"Message-ID: <t1@customer.test>\r\nDate: Mon, 02 Mar 2026 10:00:00 +0000\r\n\r\nHi\r\n"
)


@pytest.fixture
async def conversation_id(db: SessionMaker, team: Team) -> str:
    async with transaction(db) as session:
        context = InboxContext(inbox_id=team.inbox_a, team_addresses=frozenset())
        await store_batch(
            session,
            context,
            [Incoming(raw=RAW, parsed=parse_message(RAW))],
            now=datetime(2026, 3, 2, 12, tzinfo=UTC),
        )
    async with transaction(db) as session:
        from inbox_service.conversations.models import Conversation

        found = await session.scalar(
            select(Conversation.id).where(Conversation.inbox_id == team.inbox_a)
        )
        assert found is not None
        return found


async def events_of(db: SessionMaker, kind: str, conversation_id: str) -> int:
    async with transaction(db) as session:
        count = await session.scalar(
            select(func.count())
            .select_from(Event)
            .where(Event.type == kind, Event.conversation_id == conversation_id)
        )
        return int(count or 0)


class TestTags:
    async def test_create_list_and_names_are_unique_whatever_the_case(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        created = await client.post("/v1/tags", json={"name": "Refund"}, headers=team.agent_headers)
        assert created.status_code == 201
        again = await client.post("/v1/tags", json={"name": "REFUND"}, headers=team.agent_headers)
        assert again.status_code == 409
        listed = await client.get("/v1/tags", headers=team.agent_headers)
        assert [t["name"] for t in listed.json()["items"]] == ["Refund"]

    @pytest.mark.parametrize("name", ["", "a,b", "line\nbreak", "x" * 65])
    async def test_bad_names_are_422(
        self, client: httpx.AsyncClient, team: Team, name: str
    ) -> None:
        response = await client.post("/v1/tags", json={"name": name}, headers=team.agent_headers)
        assert response.status_code == 422
        assert response.json()["errors"][0]["loc"] == ["body", "name"]

    async def test_only_admins_delete_tags(self, client: httpx.AsyncClient, team: Team) -> None:
        tag = await client.post("/v1/tags", json={"name": "vip"}, headers=team.admin_headers)
        tag_id = tag.json()["id"]
        forbidden = await client.delete(f"/v1/tags/{tag_id}", headers=team.agent_headers)
        assert forbidden.status_code == 403
        assert (
            await client.delete(f"/v1/tags/{tag_id}", headers=team.admin_headers)
        ).status_code == 204
        assert (
            await client.delete(f"/v1/tags/{tag_id}", headers=team.admin_headers)
        ).status_code == 404


class TestTagConversation:
    async def test_tagging_shows_on_the_conversation_with_activity_and_one_event(
        self, client: httpx.AsyncClient, team: Team, conversation_id: str, db: SessionMaker
    ) -> None:
        await client.post("/v1/tags", json={"name": "Refund"}, headers=team.agent_headers)
        path = f"/v1/conversations/{conversation_id}/tags"
        for _ in range(2):  # the second time changes nothing
            response = await client.post(path, json={"name": "refund"}, headers=team.agent_headers)
            assert response.status_code == 200, response.text
            assert response.json()["tags"] == ["Refund"]
        assert await events_of(db, "conversation.tagged", conversation_id) == 1
        listed = await client.get("/v1/conversations?tag=REFUND", headers=team.agent_headers)
        assert [c["id"] for c in listed.json()["items"]] == [conversation_id]
        timeline = await client.get(
            f"/v1/conversations/{conversation_id}/timeline", headers=team.agent_headers
        )
        tagged = [e for e in timeline.json()["items"] if e["kind"] == "tagged"]
        assert tagged[0]["actor_id"] == team.agent_id

        removed = await client.delete(f"{path}/Refund", headers=team.agent_headers)
        assert removed.status_code == 200
        assert removed.json()["tags"] == []
        assert await events_of(db, "conversation.tagged", conversation_id) == 2
        missing = await client.delete(f"{path}/Refund", headers=team.agent_headers)
        assert missing.status_code == 404

    async def test_an_unknown_tag_is_422_and_changes_nothing(
        self, client: httpx.AsyncClient, team: Team, conversation_id: str, db: SessionMaker
    ) -> None:
        before = await client.get(
            f"/v1/conversations/{conversation_id}", headers=team.agent_headers
        )
        response = await client.post(
            f"/v1/conversations/{conversation_id}/tags",
            json={"name": "nope"},
            headers=team.agent_headers,
        )
        assert response.status_code == 422
        after = await client.get(f"/v1/conversations/{conversation_id}", headers=team.agent_headers)
        assert after.json()["version"] == before.json()["version"]
        assert await events_of(db, "conversation.tagged", conversation_id) == 0

    async def test_another_inboxes_conversation_is_404(
        self, client: httpx.AsyncClient, team: Team, conversation_id: str
    ) -> None:
        await client.post("/v1/tags", json={"name": "vip"}, headers=team.admin_headers)
        response = await client.post(
            f"/v1/conversations/{conversation_id}/tags",
            json={"name": "vip"},
            headers=team.outsider_headers,
        )
        assert response.status_code == 404


class TestCreateNote:
    async def test_mentions_resolve_to_users_and_the_note_is_in_the_timeline(
        self,
        client: httpx.AsyncClient,
        team: Team,
        conversation_id: str,
        db: SessionMaker,
        clock: FixedClock,
    ) -> None:
        clock.set(datetime(2026, 3, 2, 12, 30, tzinfo=UTC))  # after the message
        me = (await client.get("/v1/me", headers=team.admin_headers)).json()
        body = f"@{team.agent_id} and @{me['email'].upper()} look; @nobody@nowhere.test no"
        response = await client.post(
            f"/v1/conversations/{conversation_id}/notes",
            json={"body": body},
            headers=team.agent_headers,
        )
        assert response.status_code == 201, response.text
        note = response.json()
        assert note["mentions"] == [team.agent_id, team.admin_id]
        assert note["author_id"] == team.agent_id
        assert await events_of(db, "note.created", conversation_id) == 1
        timeline = await client.get(
            f"/v1/conversations/{conversation_id}/timeline", headers=team.agent_headers
        )
        assert [e["type"] for e in timeline.json()["items"]] == ["message", "note"]

    async def test_empty_notes_and_foreign_conversations_are_refused(
        self, client: httpx.AsyncClient, team: Team, conversation_id: str, db: SessionMaker
    ) -> None:
        path = f"/v1/conversations/{conversation_id}/notes"
        empty = await client.post(path, json={"body": ""}, headers=team.agent_headers)
        assert empty.status_code == 422
        foreign = await client.post(path, json={"body": "hi"}, headers=team.outsider_headers)
        assert foreign.status_code == 404
        assert await events_of(db, "note.created", conversation_id) == 0
