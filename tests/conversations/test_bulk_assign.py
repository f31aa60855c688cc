"""Assigning conversations and bulk actions (all or nothing)."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import func, select

from inbox_service.conversations.models import Conversation
from inbox_service.core.db import SessionMaker, transaction
from inbox_service.core.events import Event
from inbox_service.ingest.mime import parse_message
from inbox_service.ingest.store import InboxContext, Incoming, store_batch
from tests.conftest import Team


def raw(n: int) -> bytes:
    return (
        f"From: c{n}@customer.test\r\nTo: support@example.com\r\nSubject: Question {n}\r\n"
        f"Message-ID: <b{n}@customer.test>\r\nDate: Mon, 02 Mar 2026 10:00:00 +0000\r\n\r\nHi\r\n"
    ).encode()


async def conversations_in(db: SessionMaker, inbox_id: str, numbers: range) -> list[str]:
    async with transaction(db) as session:
        items = [Incoming(raw=raw(n), parsed=parse_message(raw(n))) for n in numbers]
        context = InboxContext(inbox_id=inbox_id, team_addresses=frozenset())
        await store_batch(session, context, items, now=datetime(2026, 3, 2, 12, tzinfo=UTC))
        ids = await session.scalars(
            select(Conversation.id)
            .where(Conversation.inbox_id == inbox_id)
            .order_by(Conversation.id)
        )
        return list(ids)


async def count_events(db: SessionMaker, kind: str) -> int:
    async with transaction(db) as session:
        return int(
            await session.scalar(select(func.count()).select_from(Event).where(Event.type == kind))
            or 0
        )


@pytest.fixture
async def in_a(db: SessionMaker, team: Team) -> list[str]:
    return await conversations_in(db, team.inbox_a, range(1, 4))


class TestAssignConversation:
    async def test_assign_and_unassign_with_events_naming_the_previous_assignee(
        self, client: httpx.AsyncClient, team: Team, in_a: list[str], db: SessionMaker
    ) -> None:
        path = f"/v1/conversations/{in_a[0]}/assign"
        assigned = await client.post(
            path, json={"assignee_id": team.agent_id}, headers=team.agent_headers
        )
        assert assigned.status_code == 200, assigned.text
        assert assigned.json()["assignee_id"] == team.agent_id
        mine = await client.get("/v1/conversations?assignee_id=me", headers=team.agent_headers)
        assert [c["id"] for c in mine.json()["items"]] == [in_a[0]]
        unassigned = await client.post(path, json={"assignee_id": None}, headers=team.agent_headers)
        assert unassigned.json()["assignee_id"] is None
        async with transaction(db) as session:
            event = await session.scalar(
                select(Event).where(Event.type == "conversation.unassigned")
            )
            assert event is not None
            assert event.data["previous_assignee_id"] == team.agent_id
            assert event.data["actor"] == {"id": team.agent_id}

    async def test_only_members_of_the_inbox_can_be_assignees(
        self, client: httpx.AsyncClient, team: Team, in_a: list[str], db: SessionMaker
    ) -> None:
        response = await client.post(
            f"/v1/conversations/{in_a[0]}/assign",
            json={"assignee_id": team.outsider_id},
            headers=team.admin_headers,
        )
        assert response.status_code == 422
        assert await count_events(db, "conversation.assigned") == 0


class TestBulkUpdate:
    async def test_applies_to_all_with_one_event_per_changed_conversation(
        self, client: httpx.AsyncClient, team: Team, in_a: list[str], db: SessionMaker
    ) -> None:
        await client.patch(
            f"/v1/conversations/{in_a[0]}", json={"status": "resolved"}, headers=team.agent_headers
        )
        before = await count_events(db, "conversation.status_changed")
        response = await client.post(
            "/v1/conversations/bulk",
            json={"ids": in_a, "action": "status", "value": "resolved"},
            headers=team.agent_headers,
        )
        assert response.status_code == 200, response.text
        assert response.json()["results"] == [
            {"id": in_a[0], "changed": False},
            {"id": in_a[1], "changed": True},
            {"id": in_a[2], "changed": True},
        ]
        assert await count_events(db, "conversation.status_changed") == before + 2

    @pytest.mark.parametrize(
        ("action", "value"),
        [
            ("status", "snoozed"),
            ("status", "closed"),
            ("priority", "asap"),
            ("tag", "nope"),
            ("assign", "usr_00000000000000000000000000"),
        ],
    )
    async def test_one_bad_value_changes_nothing(
        self,
        client: httpx.AsyncClient,
        team: Team,
        in_a: list[str],
        db: SessionMaker,
        action: str,
        value: str,
    ) -> None:
        response = await client.post(
            "/v1/conversations/bulk",
            json={"ids": in_a, "action": action, "value": value},
            headers=team.agent_headers,
        )
        assert response.status_code == 422
        async with transaction(db) as session:
            versions = await session.scalars(
                select(Conversation.version).where(Conversation.id.in_(in_a))
            )
            assert set(versions) == {1}

    async def test_a_foreign_id_fails_the_whole_batch(
        self, client: httpx.AsyncClient, team: Team, in_a: list[str], db: SessionMaker
    ) -> None:
        foreign = await conversations_in(db, team.inbox_b, range(10, 11))
        response = await client.post(
            "/v1/conversations/bulk",
            json={"ids": [*in_a, *foreign], "action": "priority", "value": "high"},
            headers=team.agent_headers,
        )
        assert response.status_code == 404
        assert await count_events(db, "conversation.priority_changed") == 0
