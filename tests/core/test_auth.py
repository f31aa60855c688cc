"""Who may call what: API keys (401), roles (403) and inbox scoping (404, never a leak)."""

from __future__ import annotations

import zlib
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text, update

from inbox_service.app import create_app
from inbox_service.core.auth import new_api_key, parse_api_key
from inbox_service.core.clock import FixedClock
from inbox_service.core.config import Settings
from inbox_service.core.db import SessionMaker, transaction
from inbox_service.users.models import ApiKey, User
from tests.conftest import CommittedDb, Team
from tests.support.factories import make_key, make_user

PROBLEM_JSON = "application/problem+json"


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """The response is an RFC 9457 problem with `status`; returns its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


def assert_unauthorized(response: httpx.Response) -> dict[str, Any]:
    body = assert_problem(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    return body


def token_of(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def with_wrong_secret(token: str) -> str:
    """The same key id with one secret character changed and a CRC32 that matches again."""
    body = token[:-8]  # isk_<key_id>_<secret>, without the 8 hex digit checksum
    last = body[-1]
    forged = body[:-1] + ("0" if last != "0" else "1")
    return f"{forged}{zlib.crc32(forged.encode()):08x}"


async def create_key(
    client: httpx.AsyncClient, headers: dict[str, str], **fields: Any
) -> dict[str, Any]:
    response = await client.post("/v1/api-keys", json=fields, headers=headers)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def key_ids(client: httpx.AsyncClient, headers: dict[str, str], **params: str) -> set[str]:
    response = await client.get("/v1/api-keys", headers=headers, params=params)
    assert response.status_code == 200, response.text
    return {item["id"] for item in response.json()["items"]}


async def own_key(client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, Any]:
    """The one key the caller has (the `team` fixture gives each user exactly one)."""
    me = (await client.get("/v1/me", headers=headers)).json()
    response = await client.get("/v1/api-keys", params={"user_id": me["id"]}, headers=headers)
    assert response.status_code == 200, response.text
    (item,) = response.json()["items"]
    key: dict[str, Any] = item
    return key


class TestAuthentication:
    async def test_missing_key_is_401(self, client: httpx.AsyncClient, team: Team) -> None:
        response = await client.get("/v1/me")

        body = assert_unauthorized(response)
        assert body["detail"]

    @pytest.mark.parametrize(
        "authorization",
        [
            pytest.param("Bearer not-a-key", id="garbage"),
            pytest.param("Bearer ", id="empty-bearer"),
            pytest.param("Basic dXNlcjpwYXNz", id="basic-scheme"),
            pytest.param("isk_0123456789abcdef_" + "a" * 72, id="no-scheme"),
            pytest.param("Bearer isk_0123456789abcdef_" + "a" * 64, id="no-checksum"),
            pytest.param("Bearer isk_0123456789abcdef_" + "a" * 72, id="bad-checksum"),
        ],
    )
    async def test_malformed_key_is_401(
        self, client: httpx.AsyncClient, team: Team, authorization: str
    ) -> None:
        response = await client.get("/v1/me", headers={"Authorization": authorization})

        assert_unauthorized(response)

    async def test_truncated_real_key_is_401(self, client: httpx.AsyncClient, team: Team) -> None:
        token = token_of(team.agent_headers)

        response = await client.get("/v1/me", headers=bearer(token[:-1]))

        assert_unauthorized(response)

    async def test_wrong_secret_with_valid_checksum_is_401(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        token = token_of(team.agent_headers)
        forged = with_wrong_secret(token)
        # The forgery passes the format and checksum test (same key id, other secret), so
        # only the stored secret hash can refuse it.
        parsed, original = parse_api_key(forged), parse_api_key(token)
        assert parsed is not None
        assert original is not None
        assert parsed[0] == original[0]
        assert parsed[1] != original[1]

        response = await client.get("/v1/me", headers=bearer(forged))

        assert_unauthorized(response)

    async def test_well_formed_unknown_key_is_401(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        response = await client.get("/v1/me", headers=bearer(new_api_key().token))

        assert_unauthorized(response)

    async def test_valid_key_acts_as_its_user(self, client: httpx.AsyncClient, team: Team) -> None:
        response = await client.get("/v1/me", headers=team.outsider_headers)

        assert response.status_code == 200, response.text
        assert response.json()["id"] == team.outsider_id

    async def test_revoked_key_is_401(self, client: httpx.AsyncClient, team: Team) -> None:
        spare = await create_key(client, team.agent_headers, name="spare")
        assert (await client.get("/v1/me", headers=bearer(spare["secret"]))).status_code == 200

        revoked = await client.delete(f"/v1/api-keys/{spare['id']}", headers=team.agent_headers)

        assert revoked.status_code == 204, revoked.text
        assert_unauthorized(await client.get("/v1/me", headers=bearer(spare["secret"])))
        # The key that revoked it is untouched.
        assert (await client.get("/v1/me", headers=team.agent_headers)).status_code == 200

    async def test_revoking_the_key_in_use_locks_it_out_at_once(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        key = await own_key(client, team.agent_headers)

        revoked = await client.delete(f"/v1/api-keys/{key['id']}", headers=team.agent_headers)

        assert revoked.status_code == 204, revoked.text
        assert_unauthorized(await client.get("/v1/me", headers=team.agent_headers))

    async def test_expired_key_is_401(
        self, client: httpx.AsyncClient, team: Team, clock: FixedClock
    ) -> None:
        expires_at = clock.now() + timedelta(hours=1)
        key = await create_key(client, team.agent_headers, expires_at=expires_at.isoformat())
        headers = bearer(key["secret"])

        clock.advance(minutes=59, seconds=59)
        assert (await client.get("/v1/me", headers=headers)).status_code == 200

        clock.advance(seconds=2)
        assert_unauthorized(await client.get("/v1/me", headers=headers))

    async def test_deleted_users_key_is_401(
        self, client: httpx.AsyncClient, team: Team, db: SessionMaker, clock: FixedClock
    ) -> None:
        # Only the user is marked deleted, the key stays unrevoked: authentication itself
        # must refuse keys of deleted users (DELETE /v1/users also revokes; see users tests).
        async with transaction(db) as s:
            await s.execute(
                update(User).where(User.id == team.agent_id).values(deleted_at=clock.now())
            )
            revoked = await s.scalars(
                select(ApiKey.revoked_at).where(ApiKey.user_id == team.agent_id)
            )
            assert list(revoked) == [None]

        assert_unauthorized(await client.get("/v1/me", headers=team.agent_headers))

    async def test_deleting_a_user_via_the_api_locks_out_their_key(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        deleted = await client.delete(f"/v1/users/{team.agent_id}", headers=team.admin_headers)

        assert deleted.status_code == 204, deleted.text
        assert_unauthorized(await client.get("/v1/me", headers=team.agent_headers))


class TestLastUsedAt:
    async def test_is_empty_until_the_key_is_used(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        key = await create_key(client, team.agent_headers)

        assert key["last_used_at"] is None

    async def test_is_set_on_use(
        self, client: httpx.AsyncClient, team: Team, clock: FixedClock
    ) -> None:
        key = await create_key(client, team.agent_headers, name="script")
        used_at = clock.advance(minutes=5)

        assert (await client.get("/v1/me", headers=bearer(key["secret"]))).status_code == 200

        listed = await client.get("/v1/api-keys", headers=team.agent_headers)
        by_id = {item["id"]: item for item in listed.json()["items"]}
        assert datetime.fromisoformat(by_id[key["id"]]["last_used_at"]) == used_at

    async def test_shows_the_current_request_in_the_same_answer(
        self, client: httpx.AsyncClient, team: Team, clock: FixedClock
    ) -> None:
        used_at = clock.advance(minutes=3)

        response = await client.get("/v1/api-keys", headers=team.agent_headers)

        (key,) = response.json()["items"]  # the agent's only key, the one in use
        assert datetime.fromisoformat(key["last_used_at"]) == used_at

    async def test_moves_forward_on_later_use(
        self, client: httpx.AsyncClient, team: Team, clock: FixedClock
    ) -> None:
        key = await create_key(client, team.agent_headers, name="script")
        clock.advance(minutes=5)
        assert (await client.get("/v1/me", headers=bearer(key["secret"]))).status_code == 200
        later = clock.advance(hours=2)

        assert (await client.get("/v1/me", headers=bearer(key["secret"]))).status_code == 200

        listed = await client.get(
            "/v1/api-keys", params={"user_id": team.agent_id}, headers=team.admin_headers
        )
        by_id = {item["id"]: item for item in listed.json()["items"]}
        assert datetime.fromisoformat(by_id[key["id"]]["last_used_at"]) == later


# Every admin-only operation, aimed at things the agent can see: 403, not 404.
ADMIN_ONLY = [
    pytest.param("POST", "/v1/users", {"email": "new@example.com", "name": "New"}, id="users-c"),
    pytest.param("DELETE", "/v1/users/{outsider_id}", None, id="users-delete"),
    pytest.param("POST", "/v1/inboxes", {"name": "New", "address": "n@example.com"}, id="inb-c"),
    pytest.param("PATCH", "/v1/inboxes/{inbox_a}", {"name": "Renamed"}, id="inboxes-patch"),
    pytest.param("DELETE", "/v1/inboxes/{inbox_a}", None, id="inboxes-delete"),
    pytest.param("PUT", "/v1/inboxes/{inbox_a}/members/{outsider_id}", None, id="members-put"),
    pytest.param("DELETE", "/v1/inboxes/{inbox_a}/members/{agent_id}", None, id="members-del"),
]


def fill(path: str, team: Team) -> str:
    return path.format(
        inbox_a=team.inbox_a,
        inbox_b=team.inbox_b,
        agent_id=team.agent_id,
        outsider_id=team.outsider_id,
    )


class TestRoles:
    @pytest.mark.parametrize(("method", "path", "body"), ADMIN_ONLY)
    async def test_agent_on_admin_endpoint_is_403(
        self,
        client: httpx.AsyncClient,
        team: Team,
        method: str,
        path: str,
        body: dict[str, str] | None,
    ) -> None:
        response = await client.request(
            method, fill(path, team), json=body, headers=team.agent_headers
        )

        assert_problem(response, 403)

    @pytest.mark.parametrize(("method", "path", "body"), ADMIN_ONLY)
    async def test_admin_may(
        self,
        client: httpx.AsyncClient,
        team: Team,
        method: str,
        path: str,
        body: dict[str, str] | None,
    ) -> None:
        response = await client.request(
            method, fill(path, team), json=body, headers=team.admin_headers
        )

        assert response.status_code in (200, 201, 204), response.text

    async def test_refused_writes_change_nothing(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        for method, path, body in (p.values for p in ADMIN_ONLY):
            await client.request(method, fill(path, team), json=body, headers=team.agent_headers)

        inbox = (await client.get(f"/v1/inboxes/{team.inbox_a}", headers=team.admin_headers)).json()
        assert inbox["version"] == 1
        members = await client.get(
            f"/v1/inboxes/{team.inbox_a}/members", headers=team.admin_headers
        )
        assert [m["user_id"] for m in members.json()] == [team.agent_id]
        users = await client.get("/v1/users", headers=team.admin_headers)
        emails = {u["email"] for u in users.json()["items"]}
        assert "new@example.com" not in emails
        assert team.outsider_id in {u["id"] for u in users.json()["items"]}
        inboxes = await client.get("/v1/inboxes", headers=team.admin_headers)
        assert len(inboxes.json()["items"]) == 2


# Everything aimed at inbox B, which the agent (a member of A only) cannot see.
FOREIGN_INBOX = [
    pytest.param("GET", "/v1/inboxes/{inbox_b}", None, id="get"),
    pytest.param("GET", "/v1/inboxes/{inbox_b}/members", None, id="members"),
    pytest.param("PATCH", "/v1/inboxes/{inbox_b}", {"name": "Mine now"}, id="patch"),
    pytest.param("DELETE", "/v1/inboxes/{inbox_b}", None, id="delete"),
    pytest.param("PUT", "/v1/inboxes/{inbox_b}/members/{agent_id}", None, id="join"),
    pytest.param("DELETE", "/v1/inboxes/{inbox_b}/members/{outsider_id}", None, id="kick"),
]


class TestInboxScoping:
    @pytest.mark.parametrize(("method", "path", "body"), FOREIGN_INBOX)
    async def test_agent_on_foreign_inbox_is_404(
        self,
        client: httpx.AsyncClient,
        team: Team,
        method: str,
        path: str,
        body: dict[str, str] | None,
    ) -> None:
        inbox_b = (
            await client.get(f"/v1/inboxes/{team.inbox_b}", headers=team.admin_headers)
        ).json()

        response = await client.request(
            method, fill(path, team), json=body, headers=team.agent_headers
        )

        assert_problem(response, 404)
        assert inbox_b["name"] not in response.text
        assert inbox_b["address"] not in response.text

    @pytest.mark.parametrize(("method", "path", "body"), FOREIGN_INBOX)
    async def test_foreign_inbox_looks_like_a_missing_one(
        self,
        client: httpx.AsyncClient,
        team: Team,
        method: str,
        path: str,
        body: dict[str, str] | None,
    ) -> None:
        missing = "inb_doesnotexist"
        foreign = await client.request(
            method, fill(path, team), json=body, headers=team.agent_headers
        )
        absent = await client.request(
            method,
            fill(path, team).replace(team.inbox_b, missing),
            json=body,
            headers=team.agent_headers,
        )

        foreign_body = assert_problem(foreign, 404)
        absent_body = assert_problem(absent, 404)
        assert foreign_body == {
            **absent_body,
            "detail": absent_body["detail"].replace(missing, team.inbox_b),
        }

    async def test_refused_writes_change_nothing(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        before = (
            await client.get(f"/v1/inboxes/{team.inbox_b}", headers=team.admin_headers)
        ).json()

        for method, path, body in (p.values for p in FOREIGN_INBOX):
            await client.request(method, fill(path, team), json=body, headers=team.agent_headers)

        after = await client.get(f"/v1/inboxes/{team.inbox_b}", headers=team.admin_headers)
        assert after.json() == before
        members = await client.get(
            f"/v1/inboxes/{team.inbox_b}/members", headers=team.admin_headers
        )
        assert [m["user_id"] for m in members.json()] == [team.outsider_id]

    async def test_agent_reads_own_inbox(self, client: httpx.AsyncClient, team: Team) -> None:
        response = await client.get(f"/v1/inboxes/{team.inbox_a}", headers=team.agent_headers)

        assert response.status_code == 200, response.text
        assert response.json()["id"] == team.inbox_a


class TestListScoping:
    async def test_agent_lists_only_own_inboxes(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        response = await client.get("/v1/inboxes", headers=team.agent_headers)

        assert response.status_code == 200, response.text
        assert [i["id"] for i in response.json()["items"]] == [team.inbox_a]

    async def test_admin_lists_every_inbox(self, client: httpx.AsyncClient, team: Team) -> None:
        response = await client.get("/v1/inboxes", headers=team.admin_headers)

        assert response.status_code == 200, response.text
        assert {i["id"] for i in response.json()["items"]} == {team.inbox_a, team.inbox_b}

    async def test_agent_without_inboxes_lists_none(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        removed = await client.delete(
            f"/v1/inboxes/{team.inbox_a}/members/{team.agent_id}", headers=team.admin_headers
        )
        assert removed.status_code == 204, removed.text

        response = await client.get("/v1/inboxes", headers=team.agent_headers)

        assert response.status_code == 200, response.text
        assert response.json()["items"] == []

    async def test_agent_lists_only_own_api_keys(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        mine = await own_key(client, team.agent_headers)
        spare = await create_key(client, team.agent_headers, name="spare")

        listed = await key_ids(client, team.agent_headers)

        assert listed == {mine["id"], spare["id"]}

    async def test_agent_cannot_list_another_users_keys(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        listed = await key_ids(client, team.agent_headers, user_id=team.outsider_id)

        assert listed == set()

    async def test_admin_lists_every_key(self, client: httpx.AsyncClient, team: Team) -> None:
        expected = {
            (await own_key(client, headers))["id"]
            for headers in (team.admin_headers, team.agent_headers, team.outsider_headers)
        }

        assert await key_ids(client, team.admin_headers) == expected

    async def test_admin_filters_keys_by_user(self, client: httpx.AsyncClient, team: Team) -> None:
        outsider_key = await own_key(client, team.outsider_headers)

        listed = await key_ids(client, team.admin_headers, user_id=team.outsider_id)

        assert listed == {outsider_key["id"]}

    async def test_agent_cannot_revoke_another_users_key(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        outsider_key = await own_key(client, team.outsider_headers)

        response = await client.delete(
            f"/v1/api-keys/{outsider_key['id']}", headers=team.agent_headers
        )

        assert_problem(response, 404)
        assert (await client.get("/v1/me", headers=team.outsider_headers)).status_code == 200

    async def test_admin_may_revoke_another_users_key(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        outsider_key = await own_key(client, team.outsider_headers)

        response = await client.delete(
            f"/v1/api-keys/{outsider_key['id']}", headers=team.admin_headers
        )

        assert response.status_code == 204, response.text
        assert_unauthorized(await client.get("/v1/me", headers=team.outsider_headers))


class TestProblemDetails:
    async def test_401_is_a_problem_document(self, client: httpx.AsyncClient, team: Team) -> None:
        response = await client.get("/v1/inboxes")

        body = assert_unauthorized(response)
        assert body["type"].startswith("https://")
        assert body["title"]
        assert body["detail"]

    async def test_403_is_a_problem_document(self, client: httpx.AsyncClient, team: Team) -> None:
        response = await client.post(
            "/v1/users", json={"email": "x@example.com", "name": "X"}, headers=team.agent_headers
        )

        body = assert_problem(response, 403)
        assert {"type", "title", "status", "detail"} <= body.keys()
        assert body["type"] != assert_unauthorized(await client.get("/v1/me"))["type"]

    async def test_404_is_a_problem_document(self, client: httpx.AsyncClient, team: Team) -> None:
        response = await client.get("/v1/users/usr_doesnotexist", headers=team.admin_headers)

        body = assert_problem(response, 404)
        assert {"type", "title", "status", "detail"} <= body.keys()

    async def test_unknown_route_is_a_problem_document(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        response = await client.get("/v1/no-such-thing", headers=team.admin_headers)

        body = assert_problem(response, 404)
        assert {"type", "title", "status"} <= body.keys()

    async def test_validation_error_lists_each_field(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        response = await client.post(
            "/v1/users", json={"email": "nope", "name": ""}, headers=team.admin_headers
        )

        body = assert_problem(response, 422)
        assert {"type", "title", "status", "detail"} <= body.keys()
        locs = [error["loc"] for error in body["errors"]]
        assert ["body", "email"] in locs
        assert ["body", "name"] in locs
        assert all(error["msg"] for error in body["errors"])


async def _elsewhere(db: SessionMaker, sql: str, **params: Any) -> None:
    """A change in raw SQL: what another API process (or psql) does, unseen by this one."""
    async with transaction(db) as s:
        await s.execute(text(sql), params)


class TestCallerCache:
    """A key's check is reused for `auth_cache_seconds`: changes made in this process end it
    at once (the tests above), changes made elsewhere within that bound."""

    async def test_key_revoked_elsewhere_is_401_within_the_bound(
        self,
        client: httpx.AsyncClient,
        team: Team,
        db: SessionMaker,
        clock: FixedClock,
        settings: Settings,
    ) -> None:
        key = await own_key(client, team.agent_headers)  # checked, and kept
        await _elsewhere(
            db,
            "UPDATE api_keys SET revoked_at = :now WHERE id = :id",
            now=clock.now(),
            id=key["id"],
        )

        assert (await client.get("/v1/me", headers=team.agent_headers)).status_code == 200
        clock.advance(seconds=settings.auth_cache_seconds)
        assert_unauthorized(await client.get("/v1/me", headers=team.agent_headers))

    async def test_membership_added_elsewhere_is_seen_within_the_bound(
        self,
        client: httpx.AsyncClient,
        team: Team,
        db: SessionMaker,
        clock: FixedClock,
        settings: Settings,
    ) -> None:
        assert await key_ids(client, team.agent_headers)  # checked, and kept
        await _elsewhere(
            db,
            "INSERT INTO inbox_members (inbox_id, user_id, created_at) VALUES (:i, :u, :now)",
            i=team.inbox_b,
            u=team.agent_id,
            now=clock.now(),
        )

        async def visible() -> set[str]:
            response = await client.get("/v1/inboxes", headers=team.agent_headers)
            return {item["id"] for item in response.json()["items"]}

        assert await visible() == {team.inbox_a}
        clock.advance(seconds=settings.auth_cache_seconds)
        assert await visible() == {team.inbox_a, team.inbox_b}

    async def test_zero_checks_every_request(
        self, team: Team, db: SessionMaker, clock: FixedClock, settings: Settings
    ) -> None:
        app = create_app(
            settings.model_copy(update={"auth_cache_seconds": 0}), sessionmaker=db, clock=clock
        )
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            key = await own_key(client, team.agent_headers)
            await _elsewhere(
                db,
                "UPDATE api_keys SET revoked_at = :now WHERE id = :id",
                now=clock.now(),
                id=key["id"],
            )

            assert_unauthorized(await client.get("/v1/me", headers=team.agent_headers))

    async def test_wrong_secret_of_a_kept_key_is_401(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        assert (await client.get("/v1/me", headers=team.agent_headers)).status_code == 200

        forged = with_wrong_secret(token_of(team.agent_headers))

        assert_unauthorized(await client.get("/v1/me", headers=bearer(forged)))

    async def test_check_read_before_a_revocation_commits_is_not_kept(
        self, committed_db: CommittedDb, clock: FixedClock, settings: Settings
    ) -> None:
        # Real transactions: the request reads the key while the revoking one is flushed
        # but not committed yet (so it still sees a valid key), and the commit must void
        # what it kept.
        async with transaction(committed_db.sessionmaker) as s:
            user = await make_user(s)
            headers = bearer(await make_key(s, user))
        app = create_app(settings, sessionmaker=committed_db.sessionmaker, clock=clock)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            assert (await client.get("/v1/me", headers=headers)).status_code == 200
            async with committed_db.sessionmaker() as revoking:
                key = await revoking.scalar(select(ApiKey).where(ApiKey.user_id == user.id))
                assert key is not None
                key.revoked_at = clock.now()
                await revoking.flush()
                assert (await client.get("/v1/me", headers=headers)).status_code == 200
                await revoking.commit()

            assert_unauthorized(await client.get("/v1/me", headers=headers))
