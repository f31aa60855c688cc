"""Inboxes and their members, as an admin manages them, and the events each change records.

The event feed only shows committed transactions, and the `db` fixture never commits, so
these tests read the `events` table directly.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from inbox_service.core.clock import FixedClock
from inbox_service.core.db import SessionMaker, transaction
from inbox_service.core.events import Event
from inbox_service.inboxes.models import InboxMember
from tests.conftest import Team

PROBLEM_JSON = "application/problem+json"


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """The response is an RFC 9457 problem with `status`; returns its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


async def events_of(db: SessionMaker, inbox_id: str) -> list[Event]:
    """Every event recorded for the inbox, oldest first."""
    async with transaction(db) as s:
        rows = await s.scalars(select(Event).where(Event.inbox_id == inbox_id).order_by(Event.id))
        return list(rows)


async def event_types(db: SessionMaker, inbox_id: str) -> list[str]:
    return [event.type for event in await events_of(db, inbox_id)]


async def create_inbox(client: httpx.AsyncClient, team: Team, **fields: Any) -> dict[str, Any]:
    body = {"name": "Billing", "address": "billing@example.com", **fields}
    response = await client.post("/v1/inboxes", json=body, headers=team.admin_headers)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def member_ids(client: httpx.AsyncClient, team: Team, inbox_id: str) -> list[str]:
    response = await client.get(f"/v1/inboxes/{inbox_id}/members", headers=team.admin_headers)
    assert response.status_code == 200, response.text
    return [member["user_id"] for member in response.json()]


def members_path(inbox_id: str, user_id: str) -> str:
    return f"/v1/inboxes/{inbox_id}/members/{user_id}"


class TestCreateInbox:
    async def test_created_is_201_with_location_and_etag(
        self, client: httpx.AsyncClient, team: Team, clock: FixedClock
    ) -> None:
        response = await client.post(
            "/v1/inboxes",
            json={"name": "Billing", "address": "billing@example.com"},
            headers=team.admin_headers,
        )

        assert response.status_code == 201, response.text
        body = response.json()
        assert body["id"].startswith("inb_")
        assert body["name"] == "Billing"
        assert body["address"] == "billing@example.com"
        assert body["version"] == 1
        assert datetime.fromisoformat(body["created_at"]) == clock.now()
        assert response.headers["Location"] == f"/v1/inboxes/{body['id']}"
        assert response.headers["ETag"] == '"1"'
        fetched = await client.get(response.headers["Location"], headers=team.admin_headers)
        assert fetched.json() == body
        assert fetched.headers["ETag"] == '"1"'

    async def test_records_an_inbox_created_event(
        self, client: httpx.AsyncClient, team: Team, db: SessionMaker, clock: FixedClock
    ) -> None:
        inbox = await create_inbox(client, team)

        (event,) = await events_of(db, inbox["id"])
        assert event.type == "inbox.created"
        assert event.data["inbox"] == inbox
        assert event.created_at == clock.now()

    async def test_starts_without_members(self, client: httpx.AsyncClient, team: Team) -> None:
        inbox = await create_inbox(client, team)

        assert await member_ids(client, team, inbox["id"]) == []

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            pytest.param({"name": "X", "address": "nope"}, "address", id="bad-address"),
            pytest.param({"name": "X\r\nY", "address": "x@example.com"}, "name", id="crlf-name"),
            pytest.param({"address": "x@example.com"}, "name", id="missing-name"),
            pytest.param(
                {"name": "X", "address": "x@example.com", "imap_hots": "h"},
                "imap_hots",
                id="unknown-field",
            ),
        ],
    )
    async def test_invalid_body_is_422_naming_the_field(
        self,
        client: httpx.AsyncClient,
        team: Team,
        db: SessionMaker,
        body: dict[str, str],
        field: str,
    ) -> None:
        response = await client.post("/v1/inboxes", json=body, headers=team.admin_headers)

        problem = assert_problem(response, 422)
        assert ["body", field] in [error["loc"] for error in problem["errors"]]
        listed = await client.get("/v1/inboxes", headers=team.admin_headers)
        assert len(listed.json()["items"]) == 2


class TestGetInbox:
    async def test_admin_reads_any_inbox_with_etag(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        response = await client.get(f"/v1/inboxes/{team.inbox_b}", headers=team.admin_headers)

        assert response.status_code == 200, response.text
        assert response.json()["id"] == team.inbox_b
        assert response.headers["ETag"] == f'"{response.json()["version"]}"'

    async def test_unknown_id_is_404(self, client: httpx.AsyncClient, team: Team) -> None:
        response = await client.get("/v1/inboxes/inb_doesnotexist", headers=team.admin_headers)

        assert_problem(response, 404)


class TestListInboxes:
    async def test_pages_with_a_cursor(self, client: httpx.AsyncClient, team: Team) -> None:
        created = [await create_inbox(client, team, name=f"Inbox {n}") for n in range(3)]
        expected = {team.inbox_a, team.inbox_b} | {inbox["id"] for inbox in created}

        seen: list[str] = []
        cursor: str | None = None
        while True:
            params = {"limit": "2"} | ({"cursor": cursor} if cursor else {})
            response = await client.get("/v1/inboxes", params=params, headers=team.admin_headers)
            page = response.json()
            assert len(page["items"]) <= 2
            seen += [inbox["id"] for inbox in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break

        assert len(seen) == len(expected)
        assert set(seen) == expected

    async def test_bad_cursor_is_422(self, client: httpx.AsyncClient, team: Team) -> None:
        response = await client.get(
            "/v1/inboxes", params={"cursor": "not-a-cursor"}, headers=team.admin_headers
        )

        assert_problem(response, 422)


class TestUpdateInbox:
    async def test_current_if_match_is_200_and_bumps_version(
        self, client: httpx.AsyncClient, team: Team, db: SessionMaker
    ) -> None:
        read = await client.get(f"/v1/inboxes/{team.inbox_a}", headers=team.admin_headers)

        response = await client.patch(
            f"/v1/inboxes/{team.inbox_a}",
            json={"name": "Support EU", "address": "eu@example.com"},
            headers=team.admin_headers | {"If-Match": read.headers["ETag"]},
        )

        assert response.status_code == 200, response.text
        body = response.json()
        assert body["name"] == "Support EU"
        assert body["address"] == "eu@example.com"
        assert body["version"] == read.json()["version"] + 1
        assert response.headers["ETag"] == f'"{body["version"]}"'
        fetched = await client.get(f"/v1/inboxes/{team.inbox_a}", headers=team.admin_headers)
        assert fetched.json() == body

    async def test_records_an_inbox_updated_event(
        self, client: httpx.AsyncClient, team: Team, db: SessionMaker
    ) -> None:
        response = await client.patch(
            f"/v1/inboxes/{team.inbox_a}", json={"name": "Renamed"}, headers=team.admin_headers
        )

        assert response.status_code == 200, response.text
        events = await events_of(db, team.inbox_a)
        assert events[-1].type == "inbox.updated"
        assert events[-1].data["inbox"] == response.json()

    async def test_stale_if_match_is_412_and_changes_nothing(
        self, client: httpx.AsyncClient, team: Team, db: SessionMaker
    ) -> None:
        stale = (
            await client.get(f"/v1/inboxes/{team.inbox_a}", headers=team.admin_headers)
        ).headers["ETag"]
        first = await client.patch(
            f"/v1/inboxes/{team.inbox_a}",
            json={"name": "First"},
            headers=team.admin_headers | {"If-Match": stale},
        )
        assert first.status_code == 200, first.text
        events_before = await event_types(db, team.inbox_a)

        response = await client.patch(
            f"/v1/inboxes/{team.inbox_a}",
            json={"name": "Second"},
            headers=team.admin_headers | {"If-Match": stale},
        )

        assert_problem(response, 412)
        fetched = await client.get(f"/v1/inboxes/{team.inbox_a}", headers=team.admin_headers)
        assert fetched.json() == first.json()
        assert await event_types(db, team.inbox_a) == events_before

    @pytest.mark.parametrize("field", ["name", "address"])
    async def test_null_field_is_422_and_changes_nothing(
        self, client: httpx.AsyncClient, team: Team, db: SessionMaker, field: str
    ) -> None:
        before = (
            await client.get(f"/v1/inboxes/{team.inbox_a}", headers=team.admin_headers)
        ).json()
        events_before = await event_types(db, team.inbox_a)

        response = await client.patch(
            f"/v1/inboxes/{team.inbox_a}", json={field: None}, headers=team.admin_headers
        )

        problem = assert_problem(response, 422)
        assert ["body", field] in [error["loc"] for error in problem["errors"]]
        after = await client.get(f"/v1/inboxes/{team.inbox_a}", headers=team.admin_headers)
        assert after.json() == before
        assert await event_types(db, team.inbox_a) == events_before

    async def test_unknown_field_is_422(self, client: httpx.AsyncClient, team: Team) -> None:
        response = await client.patch(
            f"/v1/inboxes/{team.inbox_a}", json={"colour": "red"}, headers=team.admin_headers
        )

        problem = assert_problem(response, 422)
        assert ["body", "colour"] in [error["loc"] for error in problem["errors"]]

    async def test_unknown_inbox_is_404(self, client: httpx.AsyncClient, team: Team) -> None:
        response = await client.patch(
            "/v1/inboxes/inb_doesnotexist", json={"name": "X"}, headers=team.admin_headers
        )

        assert_problem(response, 404)


class TestDeleteInbox:
    async def test_deleted_inbox_is_gone(self, client: httpx.AsyncClient, team: Team) -> None:
        response = await client.delete(f"/v1/inboxes/{team.inbox_a}", headers=team.admin_headers)

        assert response.status_code == 204, response.text
        assert_problem(
            await client.get(f"/v1/inboxes/{team.inbox_a}", headers=team.admin_headers), 404
        )
        listed = await client.get("/v1/inboxes", headers=team.admin_headers)
        assert [inbox["id"] for inbox in listed.json()["items"]] == [team.inbox_b]

    async def test_records_an_inbox_deleted_event(
        self, client: httpx.AsyncClient, team: Team, db: SessionMaker
    ) -> None:
        before = (
            await client.get(f"/v1/inboxes/{team.inbox_a}", headers=team.admin_headers)
        ).json()

        await client.delete(f"/v1/inboxes/{team.inbox_a}", headers=team.admin_headers)

        events = await events_of(db, team.inbox_a)
        assert events[-1].type == "inbox.deleted"
        assert events[-1].data["inbox"] == before

    async def test_cascades_to_members(
        self, client: httpx.AsyncClient, team: Team, db: SessionMaker
    ) -> None:
        await client.delete(f"/v1/inboxes/{team.inbox_a}", headers=team.admin_headers)

        async with transaction(db) as s:
            left = await s.scalars(select(InboxMember).where(InboxMember.inbox_id == team.inbox_a))
            assert list(left) == []
        me = await client.get("/v1/me", headers=team.agent_headers)
        assert me.json()["inbox_ids"] == []

    async def test_leaves_other_inboxes_alone(self, client: httpx.AsyncClient, team: Team) -> None:
        await client.delete(f"/v1/inboxes/{team.inbox_a}", headers=team.admin_headers)

        assert await member_ids(client, team, team.inbox_b) == [team.outsider_id]

    async def test_deleting_twice_is_404(self, client: httpx.AsyncClient, team: Team) -> None:
        await client.delete(f"/v1/inboxes/{team.inbox_a}", headers=team.admin_headers)

        response = await client.delete(f"/v1/inboxes/{team.inbox_a}", headers=team.admin_headers)

        assert_problem(response, 404)


class TestListMembers:
    async def test_member_agent_sees_the_members(
        self, client: httpx.AsyncClient, team: Team, clock: FixedClock
    ) -> None:
        response = await client.get(
            f"/v1/inboxes/{team.inbox_a}/members", headers=team.agent_headers
        )

        assert response.status_code == 200, response.text
        assert response.json() == [
            {
                "inbox_id": team.inbox_a,
                "user_id": team.agent_id,
                "created_at": clock.now().isoformat().replace("+00:00", "Z"),
            }
        ]


class TestAddMember:
    async def test_new_member_is_201_then_200(
        self, client: httpx.AsyncClient, team: Team, clock: FixedClock
    ) -> None:
        path = members_path(team.inbox_a, team.outsider_id)
        added_at = clock.advance(minutes=1)

        first = await client.put(path, headers=team.admin_headers)
        clock.advance(minutes=1)
        second = await client.put(path, headers=team.admin_headers)

        assert first.status_code == 201, first.text
        assert second.status_code == 200, second.text
        assert first.json() == second.json()
        assert first.json()["inbox_id"] == team.inbox_a
        assert first.json()["user_id"] == team.outsider_id
        assert datetime.fromisoformat(first.json()["created_at"]) == added_at
        assert sorted(await member_ids(client, team, team.inbox_a)) == sorted(
            [team.agent_id, team.outsider_id]
        )

    async def test_records_one_member_added_event(
        self, client: httpx.AsyncClient, team: Team, db: SessionMaker
    ) -> None:
        before = await event_types(db, team.inbox_a)
        path = members_path(team.inbox_a, team.outsider_id)

        await client.put(path, headers=team.admin_headers)
        await client.put(path, headers=team.admin_headers)

        events = await events_of(db, team.inbox_a)
        assert [e.type for e in events] == [*before, "inbox.member_added"]
        assert events[-1].data == {"inbox_id": team.inbox_a, "user_id": team.outsider_id}

    async def test_new_member_sees_the_inbox_at_once(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        path = f"/v1/inboxes/{team.inbox_a}"
        assert_problem(await client.get(path, headers=team.outsider_headers), 404)

        await client.put(members_path(team.inbox_a, team.outsider_id), headers=team.admin_headers)

        response = await client.get(path, headers=team.outsider_headers)
        assert response.status_code == 200, response.text
        listed = await client.get("/v1/inboxes", headers=team.outsider_headers)
        assert {i["id"] for i in listed.json()["items"]} == {team.inbox_a, team.inbox_b}

    async def test_unknown_user_is_404(self, client: httpx.AsyncClient, team: Team) -> None:
        response = await client.put(
            members_path(team.inbox_a, "usr_doesnotexist"), headers=team.admin_headers
        )

        assert_problem(response, 404)
        assert await member_ids(client, team, team.inbox_a) == [team.agent_id]

    async def test_deleted_user_is_404(self, client: httpx.AsyncClient, team: Team) -> None:
        await client.delete(f"/v1/users/{team.outsider_id}", headers=team.admin_headers)

        response = await client.put(
            members_path(team.inbox_a, team.outsider_id), headers=team.admin_headers
        )

        assert_problem(response, 404)
        assert await member_ids(client, team, team.inbox_a) == [team.agent_id]

    async def test_unknown_inbox_is_404(self, client: httpx.AsyncClient, team: Team) -> None:
        response = await client.put(
            members_path("inb_doesnotexist", team.agent_id), headers=team.admin_headers
        )

        assert_problem(response, 404)


class TestRemoveMember:
    async def test_removed_member_loses_the_inbox_at_once(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        path = f"/v1/inboxes/{team.inbox_a}"
        assert (await client.get(path, headers=team.agent_headers)).status_code == 200

        response = await client.delete(
            members_path(team.inbox_a, team.agent_id), headers=team.admin_headers
        )

        assert response.status_code == 204, response.text
        assert_problem(await client.get(path, headers=team.agent_headers), 404)
        assert_problem(await client.get(f"{path}/members", headers=team.agent_headers), 404)
        listed = await client.get("/v1/inboxes", headers=team.agent_headers)
        assert listed.json()["items"] == []
        assert await member_ids(client, team, team.inbox_a) == []

    async def test_records_a_member_removed_event(
        self, client: httpx.AsyncClient, team: Team, db: SessionMaker
    ) -> None:
        await client.delete(members_path(team.inbox_a, team.agent_id), headers=team.admin_headers)

        events = await events_of(db, team.inbox_a)
        assert events[-1].type == "inbox.member_removed"
        assert events[-1].data == {"inbox_id": team.inbox_a, "user_id": team.agent_id}

    async def test_not_a_member_is_404(
        self, client: httpx.AsyncClient, team: Team, db: SessionMaker
    ) -> None:
        before = await event_types(db, team.inbox_a)

        response = await client.delete(
            members_path(team.inbox_a, team.outsider_id), headers=team.admin_headers
        )

        assert_problem(response, 404)
        assert await event_types(db, team.inbox_a) == before
        assert await member_ids(client, team, team.inbox_b) == [team.outsider_id]

    async def test_removing_twice_is_404(self, client: httpx.AsyncClient, team: Team) -> None:
        path = members_path(team.inbox_a, team.agent_id)
        await client.delete(path, headers=team.admin_headers)

        assert_problem(await client.delete(path, headers=team.admin_headers), 404)

    async def test_the_user_keeps_other_memberships(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        await client.put(members_path(team.inbox_b, team.agent_id), headers=team.admin_headers)

        await client.delete(members_path(team.inbox_a, team.agent_id), headers=team.admin_headers)

        me = await client.get("/v1/me", headers=team.agent_headers)
        assert me.json()["inbox_ids"] == [team.inbox_b]
