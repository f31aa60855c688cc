"""Users (create, read, edit with If-Match, soft delete) and their API keys."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from inbox_service.core.auth import Caller
from inbox_service.core.clock import FixedClock
from inbox_service.core.db import transaction
from inbox_service.core.errors import Conflict
from inbox_service.users import service as users_service
from inbox_service.users.schemas import UserPatch
from tests.conftest import CommittedDb, Team
from tests.support.factories import make_user

PROBLEM_JSON = "application/problem+json"


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """The response is an RFC 9457 problem with `status`; returns its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


def error_locs(body: dict[str, Any]) -> list[list[str | int]]:
    return [error["loc"] for error in body["errors"]]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def create_user(
    client: httpx.AsyncClient, headers: dict[str, str], **fields: Any
) -> dict[str, Any]:
    body = {"email": "new.agent@example.com", "name": "New Agent", **fields}
    response = await client.post("/v1/users", json=body, headers=headers)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def get_user(client: httpx.AsyncClient, team: Team, user_id: str) -> httpx.Response:
    return await client.get(f"/v1/users/{user_id}", headers=team.admin_headers)


async def listed_user_ids(client: httpx.AsyncClient, team: Team) -> set[str]:
    response = await client.get("/v1/users", params={"limit": 200}, headers=team.admin_headers)
    assert response.status_code == 200, response.text
    return {user["id"] for user in response.json()["items"]}


class TestCreateUser:
    async def test_created_is_201_with_location_and_etag(
        self, client: httpx.AsyncClient, team: Team, clock: FixedClock
    ) -> None:
        response = await client.post(
            "/v1/users",
            json={"email": "ann@example.com", "name": "Ann", "capacity": 5},
            headers=team.admin_headers,
        )

        assert response.status_code == 201, response.text
        body = response.json()
        assert body["id"].startswith("usr_")
        assert body["email"] == "ann@example.com"
        assert body["name"] == "Ann"
        assert body["role"] == "agent"
        assert body["availability"] == "available"
        assert body["capacity"] == 5
        assert body["version"] == 1
        assert response.headers["Location"] == f"/v1/users/{body['id']}"
        assert response.headers["ETag"] == '"1"'

        fetched = await client.get(response.headers["Location"], headers=team.admin_headers)
        assert fetched.status_code == 200, fetched.text
        assert fetched.json() == body
        assert fetched.headers["ETag"] == '"1"'

    async def test_admin_may_create_an_admin(self, client: httpx.AsyncClient, team: Team) -> None:
        created = await create_user(client, team.admin_headers, role="admin")

        assert created["role"] == "admin"

    async def test_duplicate_email_is_409(self, client: httpx.AsyncClient, team: Team) -> None:
        await create_user(client, team.admin_headers, email="Dup@Example.com")

        response = await client.post(
            "/v1/users",
            json={"email": "dup@example.COM", "name": "Twin"},
            headers=team.admin_headers,
        )

        assert_problem(response, 409)
        users = await client.get("/v1/users", headers=team.admin_headers)
        assert [u["name"] for u in users.json()["items"]].count("Twin") == 0

    async def test_deleted_users_email_may_be_reused(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        first = await create_user(client, team.admin_headers, email="reuse@example.com")
        deleted = await client.delete(f"/v1/users/{first['id']}", headers=team.admin_headers)
        assert deleted.status_code == 204, deleted.text

        second = await create_user(client, team.admin_headers, email="reuse@example.com")

        assert second["id"] != first["id"]

    async def test_unknown_field_is_422_naming_it(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        response = await client.post(
            "/v1/users",
            json={"email": "x@example.com", "name": "X", "nickname": "xx"},
            headers=team.admin_headers,
        )

        body = assert_problem(response, 422)
        assert ["body", "nickname"] in error_locs(body)

    @pytest.mark.parametrize("email", ["not-an-email", "a@", "@example.com", "a b@example.com"])
    async def test_bad_email_is_422(
        self, client: httpx.AsyncClient, team: Team, email: str
    ) -> None:
        response = await client.post(
            "/v1/users", json={"email": email, "name": "X"}, headers=team.admin_headers
        )

        body = assert_problem(response, 422)
        assert ["body", "email"] in error_locs(body)

    @pytest.mark.parametrize(
        "name",
        [
            pytest.param("Eve\r\nBcc: victim@example.com", id="crlf"),
            pytest.param("Eve\nBcc: victim@example.com", id="lf"),
            pytest.param("Eve\rX", id="cr"),
            pytest.param("Eve\x00", id="nul"),
            pytest.param("", id="empty"),
            pytest.param("   ", id="blank"),
            pytest.param("x" * 201, id="too-long"),
        ],
    )
    async def test_bad_name_is_422(self, client: httpx.AsyncClient, team: Team, name: str) -> None:
        response = await client.post(
            "/v1/users", json={"email": "eve@example.com", "name": name}, headers=team.admin_headers
        )

        body = assert_problem(response, 422)
        assert ["body", "name"] in error_locs(body)

    @pytest.mark.parametrize("capacity", [-1, 10_001, "lots"])
    async def test_capacity_out_of_range_is_422(
        self, client: httpx.AsyncClient, team: Team, capacity: object
    ) -> None:
        response = await client.post(
            "/v1/users",
            json={"email": "cap@example.com", "name": "Cap", "capacity": capacity},
            headers=team.admin_headers,
        )

        body = assert_problem(response, 422)
        assert ["body", "capacity"] in error_locs(body)

    @pytest.mark.parametrize("capacity", [0, 10_000])
    async def test_capacity_bounds_are_accepted(
        self, client: httpx.AsyncClient, team: Team, capacity: int
    ) -> None:
        created = await create_user(client, team.admin_headers, capacity=capacity)

        assert created["capacity"] == capacity

    @pytest.mark.parametrize(("field", "value"), [("role", "owner"), ("availability", "busy")])
    async def test_unknown_enum_value_is_422(
        self, client: httpx.AsyncClient, team: Team, field: str, value: str
    ) -> None:
        response = await client.post(
            "/v1/users",
            json={"email": "e@example.com", "name": "E", field: value},
            headers=team.admin_headers,
        )

        body = assert_problem(response, 422)
        assert ["body", field] in error_locs(body)


class TestGetUser:
    async def test_unknown_id_is_404(self, client: httpx.AsyncClient, team: Team) -> None:
        assert_problem(await get_user(client, team, "usr_doesnotexist"), 404)

    async def test_agent_may_read_a_teammate(self, client: httpx.AsyncClient, team: Team) -> None:
        response = await client.get(f"/v1/users/{team.outsider_id}", headers=team.agent_headers)

        assert response.status_code == 200, response.text
        assert response.json()["id"] == team.outsider_id
        assert response.headers["ETag"] == f'"{response.json()["version"]}"'


class TestListUsers:
    async def test_lists_every_live_user(self, client: httpx.AsyncClient, team: Team) -> None:
        assert await listed_user_ids(client, team) == {
            team.admin_id,
            team.agent_id,
            team.outsider_id,
        }

    async def test_pages_with_a_cursor(self, client: httpx.AsyncClient, team: Team) -> None:
        seen: list[str] = []
        cursor: str | None = None
        while True:
            params = {"limit": "2"} | ({"cursor": cursor} if cursor else {})
            page = (await client.get("/v1/users", params=params, headers=team.agent_headers)).json()
            assert len(page["items"]) <= 2
            seen += [user["id"] for user in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break

        assert sorted(seen) == sorted({team.admin_id, team.agent_id, team.outsider_id})


class TestUpdateUser:
    async def test_current_if_match_is_200_and_bumps_version(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        read = await get_user(client, team, team.agent_id)

        response = await client.patch(
            f"/v1/users/{team.agent_id}",
            json={"name": "Renamed", "capacity": 3},
            headers=team.admin_headers | {"If-Match": read.headers["ETag"]},
        )

        assert response.status_code == 200, response.text
        body = response.json()
        assert body["name"] == "Renamed"
        assert body["capacity"] == 3
        assert body["version"] == read.json()["version"] + 1
        assert response.headers["ETag"] == f'"{body["version"]}"'
        assert (await get_user(client, team, team.agent_id)).json() == body

    async def test_stale_if_match_is_412_and_changes_nothing(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        stale = (await get_user(client, team, team.agent_id)).headers["ETag"]
        first = await client.patch(
            f"/v1/users/{team.agent_id}",
            json={"name": "First"},
            headers=team.admin_headers | {"If-Match": stale},
        )
        assert first.status_code == 200, first.text

        response = await client.patch(
            f"/v1/users/{team.agent_id}",
            json={"name": "Second", "availability": "away"},
            headers=team.admin_headers | {"If-Match": stale},
        )

        assert_problem(response, 412)
        assert (await get_user(client, team, team.agent_id)).json() == first.json()

    async def test_without_if_match_the_change_applies(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        response = await client.patch(
            f"/v1/users/{team.agent_id}", json={"availability": "away"}, headers=team.admin_headers
        )

        assert response.status_code == 200, response.text
        assert response.json()["availability"] == "away"

    async def test_email_taken_by_another_user_is_409(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        outsider = (await get_user(client, team, team.outsider_id)).json()
        before = (await get_user(client, team, team.agent_id)).json()

        response = await client.patch(
            f"/v1/users/{team.agent_id}",
            json={"email": outsider["email"].upper()},
            headers=team.admin_headers,
        )

        assert_problem(response, 409)
        assert (await get_user(client, team, team.agent_id)).json() == before

    async def test_null_field_is_422(self, client: httpx.AsyncClient, team: Team) -> None:
        response = await client.patch(
            f"/v1/users/{team.agent_id}", json={"name": None}, headers=team.admin_headers
        )

        body = assert_problem(response, 422)
        assert ["body", "name"] in error_locs(body)

    async def test_unknown_field_is_422_naming_it(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        response = await client.patch(
            f"/v1/users/{team.agent_id}", json={"nmae": "Typo"}, headers=team.admin_headers
        )

        body = assert_problem(response, 422)
        assert ["body", "nmae"] in error_locs(body)

    async def test_unknown_user_is_404(self, client: httpx.AsyncClient, team: Team) -> None:
        response = await client.patch(
            "/v1/users/usr_doesnotexist", json={"name": "X"}, headers=team.admin_headers
        )

        assert_problem(response, 404)

    @pytest.mark.parametrize(
        "patch", [{"availability": "away"}, {"name": "Agent Smith"}], ids=["availability", "name"]
    )
    async def test_agent_may_change_own_self_service_fields(
        self, client: httpx.AsyncClient, team: Team, patch: dict[str, str]
    ) -> None:
        response = await client.patch(
            f"/v1/users/{team.agent_id}", json=patch, headers=team.agent_headers
        )

        assert response.status_code == 200, response.text
        assert response.json().items() >= patch.items()

    @pytest.mark.parametrize(
        "patch",
        [
            {"role": "admin"},
            {"capacity": 99},
            {"email": "me@example.com"},
            {"availability": "away", "capacity": 99},
        ],
        ids=["role", "capacity", "email", "mixed"],
    )
    async def test_agent_changing_own_admin_fields_is_403(
        self, client: httpx.AsyncClient, team: Team, patch: dict[str, object]
    ) -> None:
        before = (await get_user(client, team, team.agent_id)).json()

        response = await client.patch(
            f"/v1/users/{team.agent_id}", json=patch, headers=team.agent_headers
        )

        assert_problem(response, 403)
        assert (await get_user(client, team, team.agent_id)).json() == before

    async def test_agent_changing_another_user_is_403(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        before = (await get_user(client, team, team.outsider_id)).json()

        response = await client.patch(
            f"/v1/users/{team.outsider_id}",
            json={"availability": "away"},
            headers=team.agent_headers,
        )

        assert_problem(response, 403)
        assert (await get_user(client, team, team.outsider_id)).json() == before

    async def test_forbidden_change_with_stale_if_match_is_403(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        response = await client.patch(
            f"/v1/users/{team.outsider_id}",
            json={"availability": "away"},
            headers=team.agent_headers | {"If-Match": '"99"'},
        )

        assert_problem(response, 403)

    async def test_demoting_the_last_admin_is_409(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        response = await client.patch(
            f"/v1/users/{team.admin_id}", json={"role": "agent"}, headers=team.admin_headers
        )

        assert_problem(response, 409)
        assert (await get_user(client, team, team.admin_id)).json()["role"] == "admin"

    async def test_a_deleted_admin_does_not_count(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        other = await create_user(client, team.admin_headers, role="admin")
        deleted = await client.delete(f"/v1/users/{other['id']}", headers=team.admin_headers)
        assert deleted.status_code == 204, deleted.text

        response = await client.patch(
            f"/v1/users/{team.admin_id}", json={"role": "agent"}, headers=team.admin_headers
        )

        assert_problem(response, 409)

    async def test_demoting_an_admin_while_another_remains_is_200(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        other = await create_user(client, team.admin_headers, role="admin")

        response = await client.patch(
            f"/v1/users/{other['id']}", json={"role": "agent"}, headers=team.admin_headers
        )

        assert response.status_code == 200, response.text
        assert response.json()["role"] == "agent"


class TestDeleteUser:
    async def test_soft_deletes(self, client: httpx.AsyncClient, team: Team) -> None:
        response = await client.delete(f"/v1/users/{team.agent_id}", headers=team.admin_headers)

        assert response.status_code == 204, response.text
        assert team.agent_id not in await listed_user_ids(client, team)
        assert_problem(await get_user(client, team, team.agent_id), 404)

    async def test_revokes_the_users_keys(
        self, client: httpx.AsyncClient, team: Team, clock: FixedClock
    ) -> None:
        deleted_at = clock.advance(minutes=1)

        await client.delete(f"/v1/users/{team.agent_id}", headers=team.admin_headers)

        assert_problem(await client.get("/v1/me", headers=team.agent_headers), 401)
        keys = await client.get(
            "/v1/api-keys", params={"user_id": team.agent_id}, headers=team.admin_headers
        )
        assert [key["revoked_at"] for key in keys.json()["items"]] == [
            deleted_at.isoformat().replace("+00:00", "Z")
        ]

    async def test_ends_memberships(self, client: httpx.AsyncClient, team: Team) -> None:
        await client.delete(f"/v1/users/{team.agent_id}", headers=team.admin_headers)

        members = await client.get(
            f"/v1/inboxes/{team.inbox_a}/members", headers=team.admin_headers
        )
        assert members.json() == []

    async def test_deleting_twice_is_404(self, client: httpx.AsyncClient, team: Team) -> None:
        await client.delete(f"/v1/users/{team.agent_id}", headers=team.admin_headers)

        response = await client.delete(f"/v1/users/{team.agent_id}", headers=team.admin_headers)

        assert_problem(response, 404)

    async def test_deleting_the_last_admin_is_409(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        response = await client.delete(f"/v1/users/{team.admin_id}", headers=team.admin_headers)

        assert_problem(response, 409)
        assert (await client.get("/v1/me", headers=team.admin_headers)).status_code == 200

    async def test_an_admin_may_be_deleted_while_another_remains(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        other = await create_user(client, team.admin_headers, role="admin")

        response = await client.delete(f"/v1/users/{other['id']}", headers=team.admin_headers)

        assert response.status_code == 204, response.text

    async def test_agent_deleting_a_user_is_403(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        response = await client.delete(f"/v1/users/{team.agent_id}", headers=team.agent_headers)

        assert_problem(response, 403)
        assert team.agent_id in await listed_user_ids(client, team)


class TestCreateApiKey:
    async def test_secret_is_shown_once(self, client: httpx.AsyncClient, team: Team) -> None:
        response = await client.post(
            "/v1/api-keys", json={"name": "ci"}, headers=team.agent_headers
        )

        assert response.status_code == 201, response.text
        created = response.json()
        secret = created["secret"]
        assert secret.startswith(created["prefix"] + "_")
        assert created["user_id"] == team.agent_id
        assert created["name"] == "ci"
        assert created["revoked_at"] is None

        listed = await client.get("/v1/api-keys", headers=team.agent_headers)
        (item,) = (i for i in listed.json()["items"] if i["id"] == created["id"])
        assert "secret" not in item
        assert secret not in listed.text
        assert secret[len(created["prefix"]) :] not in listed.text

    async def test_secret_authenticates_as_the_owner(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        created = (await client.post("/v1/api-keys", json={}, headers=team.agent_headers)).json()

        me = await client.get("/v1/me", headers=bearer(created["secret"]))

        assert me.status_code == 200, me.text
        assert me.json()["id"] == team.agent_id

    async def test_admin_may_create_one_for_another_user(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        response = await client.post(
            "/v1/api-keys", json={"user_id": team.agent_id}, headers=team.admin_headers
        )

        assert response.status_code == 201, response.text
        assert response.json()["user_id"] == team.agent_id
        me = await client.get("/v1/me", headers=bearer(response.json()["secret"]))
        assert me.json()["id"] == team.agent_id
        assert me.json()["role"] == "agent"

    async def test_agent_creating_one_for_another_user_is_403(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        response = await client.post(
            "/v1/api-keys", json={"user_id": team.outsider_id}, headers=team.agent_headers
        )

        assert_problem(response, 403)
        keys = await client.get(
            "/v1/api-keys", params={"user_id": team.outsider_id}, headers=team.admin_headers
        )
        assert len(keys.json()["items"]) == 1

    async def test_agent_naming_themselves_is_201(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        response = await client.post(
            "/v1/api-keys", json={"user_id": team.agent_id}, headers=team.agent_headers
        )

        assert response.status_code == 201, response.text

    async def test_for_an_unknown_user_is_404(self, client: httpx.AsyncClient, team: Team) -> None:
        response = await client.post(
            "/v1/api-keys", json={"user_id": "usr_doesnotexist"}, headers=team.admin_headers
        )

        assert_problem(response, 404)

    async def test_for_a_deleted_user_is_404(self, client: httpx.AsyncClient, team: Team) -> None:
        await client.delete(f"/v1/users/{team.agent_id}", headers=team.admin_headers)

        response = await client.post(
            "/v1/api-keys", json={"user_id": team.agent_id}, headers=team.admin_headers
        )

        assert_problem(response, 404)

    @pytest.mark.parametrize(
        "offset", [timedelta(0), timedelta(seconds=-1), timedelta(days=-1)], ids=str
    )
    async def test_expires_at_not_in_the_future_is_422(
        self, client: httpx.AsyncClient, team: Team, clock: FixedClock, offset: timedelta
    ) -> None:
        expires_at = clock.now() + offset

        response = await client.post(
            "/v1/api-keys", json={"expires_at": expires_at.isoformat()}, headers=team.agent_headers
        )

        body = assert_problem(response, 422)
        assert ["body", "expires_at"] in error_locs(body)

    async def test_expires_at_without_time_zone_is_422(
        self, client: httpx.AsyncClient, team: Team, clock: FixedClock
    ) -> None:
        naive = (clock.now() + timedelta(days=1)).replace(tzinfo=None)

        response = await client.post(
            "/v1/api-keys", json={"expires_at": naive.isoformat()}, headers=team.agent_headers
        )

        body = assert_problem(response, 422)
        assert ["body", "expires_at"] in error_locs(body)

    async def test_expires_at_in_the_future_is_kept(
        self, client: httpx.AsyncClient, team: Team, clock: FixedClock
    ) -> None:
        expires_at = clock.now() + timedelta(days=30)

        response = await client.post(
            "/v1/api-keys", json={"expires_at": expires_at.isoformat()}, headers=team.agent_headers
        )

        assert response.status_code == 201, response.text
        assert response.json()["expires_at"] == expires_at.isoformat().replace("+00:00", "Z")


class TestRevokeApiKey:
    async def test_unknown_key_is_404(self, client: httpx.AsyncClient, team: Team) -> None:
        response = await client.delete("/v1/api-keys/key_doesnotexist", headers=team.admin_headers)

        assert_problem(response, 404)

    async def test_revoked_key_shows_when(
        self, client: httpx.AsyncClient, team: Team, clock: FixedClock
    ) -> None:
        created = (await client.post("/v1/api-keys", json={}, headers=team.agent_headers)).json()
        revoked_at = clock.advance(minutes=10)

        response = await client.delete(f"/v1/api-keys/{created['id']}", headers=team.agent_headers)

        assert response.status_code == 204, response.text
        listed = await client.get("/v1/api-keys", headers=team.agent_headers)
        (item,) = (i for i in listed.json()["items"] if i["id"] == created["id"])
        assert item["revoked_at"] == revoked_at.isoformat().replace("+00:00", "Z")


Edit = Callable[[AsyncSession], Awaitable[object]]


async def until_blocked_or_done(engine: AsyncEngine, task: asyncio.Task[object]) -> None:
    """Return once `task` finished or waits for a row lock (no sleeping, no timing)."""
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        for _ in range(10_000):
            if task.done():
                return
            waiting = await conn.scalar(text("SELECT count(*) FROM pg_locks WHERE NOT granted"))
            if waiting:
                return
    raise AssertionError("the second transaction neither finished nor blocked")


async def race(committed_db: CommittedDb, first: Edit, second: Edit) -> asyncio.Task[object]:
    """Run `second` in its own transaction while `first`'s is still open, then commit `first`.

    Returns the finished task of `second`, so the caller can see how it ended.
    """
    async with transaction(committed_db.sessionmaker) as s1:
        await first(s1)

        async def run_second() -> object:
            async with transaction(committed_db.sessionmaker) as s2:
                return await second(s2)

        task: asyncio.Task[object] = asyncio.create_task(run_second())
        await until_blocked_or_done(committed_db.engine, task)
    await asyncio.wait([task])
    return task


class TestConcurrentEdits:
    """Two transactions at once, on a database of their own (real commits)."""

    ADMIN = Caller(user_id="usr_script", role="admin", inbox_ids=None)

    def patch(self, user_id: str, clock: FixedClock, **fields: Any) -> Edit:
        async def edit(session: AsyncSession) -> object:
            user = await users_service.get_user(session, user_id)
            return await users_service.update_user(
                session, self.ADMIN, user, UserPatch(**fields), now=clock.now()
            )

        return edit

    async def test_two_admins_demoting_each_other_leave_one_admin(
        self, committed_db: CommittedDb, clock: FixedClock
    ) -> None:
        async with transaction(committed_db.sessionmaker) as s:
            a = await make_user(s, role="admin")
            b = await make_user(s, role="admin")

        second = await race(
            committed_db,
            self.patch(a.id, clock, role="agent"),
            self.patch(b.id, clock, role="agent"),
        )

        assert isinstance(second.exception(), Conflict)
        async with transaction(committed_db.sessionmaker) as s:
            assert (await users_service.get_user(s, b.id)).role == "admin"

    async def test_deleting_the_other_admin_meanwhile_keeps_one_admin(
        self, committed_db: CommittedDb, clock: FixedClock
    ) -> None:
        async with transaction(committed_db.sessionmaker) as s:
            a = await make_user(s, role="admin")
            b = await make_user(s, role="admin")

        async def delete_b(session: AsyncSession) -> None:
            user = await users_service.get_user(session, b.id)
            await users_service.delete_user(session, user, now=clock.now())

        second = await race(committed_db, delete_b, self.patch(a.id, clock, role="agent"))

        assert isinstance(second.exception(), Conflict)
        async with transaction(committed_db.sessionmaker) as s:
            assert (await users_service.get_user(s, a.id)).role == "admin"

    async def test_two_users_taking_one_address_is_409_not_500(
        self, committed_db: CommittedDb, clock: FixedClock
    ) -> None:
        async with transaction(committed_db.sessionmaker) as s:
            x = await make_user(s)
            y = await make_user(s)

        second = await race(
            committed_db,
            self.patch(x.id, clock, email="taken@example.com"),
            self.patch(y.id, clock, email="Taken@example.com"),
        )

        assert isinstance(second.exception(), Conflict)
