"""Manual assignment and the inbox's auto-assignment setting, through the API."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import func, select

from inbox_service.conversations.models import Activity, Conversation
from inbox_service.core.clock import FixedClock
from inbox_service.core.db import SessionMaker, transaction
from inbox_service.core.events import Event
from inbox_service.inboxes.models import Inbox
from tests.assignment.support import ingest, mail
from tests.conftest import Team
from tests.support.factories import make_user


@pytest.fixture
async def in_a(db: SessionMaker, team: Team, clock: FixedClock) -> str:
    [cid] = await ingest(db, team.inbox_a, [mail("manual")], now=clock.now())
    return cid


async def state(db: SessionMaker, cid: str) -> tuple[str | None, int, int, int]:
    """(assignee, version, assignment events, assignment activities) of the conversation."""
    async with transaction(db) as session:
        conversation = await session.get_one(Conversation, cid)
        events = await session.scalar(
            select(func.count())
            .select_from(Event)
            .where(
                Event.conversation_id == cid,
                Event.type.in_(["conversation.assigned", "conversation.unassigned"]),
            )
        )
        activities = await session.scalar(
            select(func.count())
            .select_from(Activity)
            .where(Activity.conversation_id == cid, Activity.kind.in_(["assigned", "unassigned"]))
        )
        return (
            conversation.assignee_id,
            conversation.version,
            int(events or 0),
            int(activities or 0),
        )


async def assign(
    client: httpx.AsyncClient, cid: str, assignee: object, headers: dict[str, str]
) -> httpx.Response:
    return await client.post(
        f"/v1/conversations/{cid}/assign", json={"assignee_id": assignee}, headers=headers
    )


class TestAssignConversation:
    async def test_self_assign_then_reassign_names_previous_assignee_and_actor(
        self, client: httpx.AsyncClient, team: Team, in_a: str, db: SessionMaker
    ) -> None:
        async with transaction(db) as session:
            colleague = await make_user(session)
        await client.put(
            f"/v1/inboxes/{team.inbox_a}/members/{colleague.id}", headers=team.admin_headers
        )
        mine = await assign(client, in_a, team.agent_id, team.agent_headers)
        assert mine.status_code == 200, mine.text
        assert mine.json()["assignee_id"] == team.agent_id
        theirs = await assign(client, in_a, colleague.id, team.agent_headers)
        assert theirs.json()["assignee_id"] == colleague.id
        async with transaction(db) as session:
            last = await session.scalar(
                select(Event)
                .where(Event.conversation_id == in_a, Event.type == "conversation.assigned")
                .order_by(Event.id.desc())
            )
        assert last is not None
        assert last.data["previous_assignee_id"] == team.agent_id
        assert last.data["assignee_id"] == colleague.id
        assert last.data["actor"] == {"id": team.agent_id}
        assert "auto_assignment" not in last.data

    async def test_assigning_the_same_person_again_changes_nothing(
        self, client: httpx.AsyncClient, team: Team, in_a: str, db: SessionMaker
    ) -> None:
        await assign(client, in_a, team.agent_id, team.agent_headers)
        before = await state(db, in_a)
        again = await assign(client, in_a, team.agent_id, team.agent_headers)
        assert again.status_code == 200
        assert await state(db, in_a) == before

    async def test_a_non_member_is_422_and_nothing_changes(
        self, client: httpx.AsyncClient, team: Team, in_a: str, db: SessionMaker
    ) -> None:
        before = await state(db, in_a)
        response = await assign(client, in_a, team.outsider_id, team.admin_headers)
        assert response.status_code == 422
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["errors"][0]["loc"] == ["body", "assignee_id"]
        assert await state(db, in_a) == before

    async def test_a_deleted_user_is_422_and_nothing_changes(
        self, client: httpx.AsyncClient, team: Team, in_a: str, db: SessionMaker
    ) -> None:
        async with transaction(db) as session:
            leaver = await make_user(session)
        await client.put(
            f"/v1/inboxes/{team.inbox_a}/members/{leaver.id}", headers=team.admin_headers
        )
        deleted = await client.delete(f"/v1/users/{leaver.id}", headers=team.admin_headers)
        assert deleted.status_code == 204
        before = await state(db, in_a)
        response = await assign(client, in_a, leaver.id, team.admin_headers)
        assert response.status_code == 422
        assert await state(db, in_a) == before

    async def test_an_unknown_user_is_422(
        self, client: httpx.AsyncClient, team: Team, in_a: str, db: SessionMaker
    ) -> None:
        before = await state(db, in_a)
        response = await assign(client, in_a, "usr_00000000000000000000000000", team.agent_headers)
        assert response.status_code == 422
        assert await state(db, in_a) == before

    async def test_a_conversation_of_another_inbox_is_404_and_nothing_changes(
        self, client: httpx.AsyncClient, team: Team, in_a: str, db: SessionMaker
    ) -> None:
        before = await state(db, in_a)
        response = await assign(client, in_a, team.outsider_id, team.outsider_headers)
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
        assert await state(db, in_a) == before

    @pytest.mark.parametrize("body", [{"assignee_id": 5}, {}, {"assignee_id": None, "x": 1}])
    async def test_bad_bodies_are_422(
        self, client: httpx.AsyncClient, team: Team, in_a: str, db: SessionMaker, body: object
    ) -> None:
        before = await state(db, in_a)
        response = await client.post(
            f"/v1/conversations/{in_a}/assign", json=body, headers=team.agent_headers
        )
        assert response.status_code == 422
        assert await state(db, in_a) == before


class TestAutoAssignmentSetting:
    async def test_admins_set_it_and_it_shows_on_the_inbox(
        self, client: httpx.AsyncClient, team: Team, db: SessionMaker
    ) -> None:
        shown = await client.get(f"/v1/inboxes/{team.inbox_a}", headers=team.agent_headers)
        assert shown.json()["auto_assignment"] == "off"
        changed = await client.patch(
            f"/v1/inboxes/{team.inbox_a}",
            json={"auto_assignment": "round_robin"},
            headers=team.admin_headers,
        )
        assert changed.status_code == 200, changed.text
        assert changed.json()["auto_assignment"] == "round_robin"
        async with transaction(db) as session:
            assert (await session.get_one(Inbox, team.inbox_a)).auto_assignment == "round_robin"
        created = await client.post(
            "/v1/inboxes",
            json={
                "name": "Sales",
                "address": "sales@example.com",
                "auto_assignment": "least_loaded",
            },
            headers=team.admin_headers,
        )
        assert created.json()["auto_assignment"] == "least_loaded"

    @pytest.mark.parametrize("value", ["sometimes", None, 1])
    async def test_bad_values_are_422(
        self, client: httpx.AsyncClient, team: Team, value: object
    ) -> None:
        response = await client.patch(
            f"/v1/inboxes/{team.inbox_a}",
            json={"auto_assignment": value},
            headers=team.admin_headers,
        )
        assert response.status_code == 422
        assert response.json()["errors"][0]["loc"] == ["body", "auto_assignment"]

    async def test_agents_cannot_change_it(self, client: httpx.AsyncClient, team: Team) -> None:
        response = await client.patch(
            f"/v1/inboxes/{team.inbox_a}",
            json={"auto_assignment": "round_robin"},
            headers=team.agent_headers,
        )
        assert response.status_code == 403
