"""POST/DELETE /v1/session-tokens and authenticating with a session token."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from sqlalchemy import text

from inbox_service.app import create_app
from inbox_service.core.clock import FixedClock
from inbox_service.core.config import Settings
from inbox_service.core.db import SessionMaker, transaction
from tests.conftest import Team
from tests.frontend.conftest import raw_mail
from tests.support.factories import bearer

PROBLEMS = "https://inbox-service.dev/problems/"


async def mint(
    client: httpx.AsyncClient, headers: dict[str, str], **body: object
) -> httpx.Response:
    return await client.post("/v1/session-tokens", json=body, headers=headers)


async def token_for(client: httpx.AsyncClient, team: Team, user_id: str, **body: object) -> str:
    response = await mint(client, team.admin_headers, user_id=user_id, **body)
    assert response.status_code == 201, response.text
    token: str = response.json()["token"]
    return token


async def conversation_in(db: SessionMaker, inbox_id: str, n: int) -> str:
    from datetime import UTC, datetime

    from inbox_service.ingest.mime import parse_message
    from inbox_service.ingest.store import InboxContext, Incoming, store_batch

    async with transaction(db) as session:
        items = [Incoming(raw=raw_mail(n), parsed=parse_message(raw_mail(n)))]
        context = InboxContext(inbox_id=inbox_id, team_addresses=frozenset())
        await store_batch(session, context, items, now=datetime(2026, 3, 2, 12, tzinfo=UTC))
        found = await session.scalar(
            text("SELECT id FROM conversations WHERE inbox_id = :i"), {"i": inbox_id}
        )
        assert found is not None
        return str(found)


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, object] = response.json()
    assert body["type"] == PROBLEMS + slug
    return body


class TestMinting:
    async def test_admin_mints_for_an_agent_who_then_sees_only_their_inboxes(
        self, client: httpx.AsyncClient, team: Team, db: SessionMaker, clock: FixedClock
    ) -> None:
        mine = await conversation_in(db, team.inbox_a, 1)
        theirs = await conversation_in(db, team.inbox_b, 2)
        response = await mint(client, team.admin_headers, user_id=team.agent_id)
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["user_id"] == team.agent_id
        assert body["token"].startswith("ist_")
        expires = clock.now() + timedelta(seconds=3600)
        assert body["expires_at"] == expires.isoformat().replace("+00:00", "Z")
        token = bearer(body["token"])

        me = await client.get("/v1/me", headers=token)
        assert me.status_code == 200
        assert me.json()["id"] == team.agent_id
        assert me.json()["role"] == "agent"
        listed = await client.get("/v1/conversations", headers=token)
        assert [c["id"] for c in listed.json()["items"]] == [mine]
        assert (await client.get(f"/v1/conversations/{mine}", headers=token)).status_code == 200
        other = await client.get(f"/v1/conversations/{theirs}", headers=token)
        assert_problem(other, 404, "not-found")
        # An agent's token is no admin: admin-only routes stay closed.
        created = await client.post(
            "/v1/users", json={"email": "x@example.com", "name": "X"}, headers=token
        )
        assert_problem(created, 403, "forbidden")

    async def test_any_key_mints_for_its_own_user(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        response = await mint(client, team.agent_headers, ttl_seconds=60)
        assert response.status_code == 201, response.text
        assert response.json()["user_id"] == team.agent_id
        same = await mint(client, team.agent_headers, user_id=team.agent_id)
        assert same.status_code == 201

    async def test_an_agent_key_cannot_mint_for_another_user(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        response = await mint(client, team.agent_headers, user_id=team.outsider_id)
        assert_problem(response, 403, "forbidden")

    async def test_a_token_mints_neither_tokens_nor_keys(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        admin_token = bearer(await token_for(client, team, team.admin_id))
        for body in ({}, {"user_id": team.agent_id}):
            assert_problem(await mint(client, admin_token, **body), 403, "forbidden")
        key = await client.post("/v1/api-keys", json={"name": "sneaky"}, headers=admin_token)
        body = assert_problem(key, 403, "forbidden")
        assert "session token" in str(body["detail"])

    @pytest.mark.parametrize(
        ("body", "where"),
        [
            pytest.param({"ttl_seconds": 59}, "ttl_seconds", id="ttl-too-short"),
            pytest.param({"ttl_seconds": 86_401}, "ttl_seconds", id="ttl-too-long"),
            pytest.param({"ttl_seconds": "long"}, "ttl_seconds", id="ttl-not-a-number"),
            pytest.param({"role": "admin"}, "role", id="unknown-field"),
        ],
    )
    async def test_bad_bodies_are_422(
        self, client: httpx.AsyncClient, team: Team, body: dict[str, object], where: str
    ) -> None:
        response = await mint(client, team.admin_headers, **body)
        problem = assert_problem(response, 422, "invalid")
        assert problem["errors"][0]["loc"] == ["body", where]  # type: ignore[index]

    async def test_malformed_json_is_422(self, client: httpx.AsyncClient, team: Team) -> None:
        response = await client.post(
            "/v1/session-tokens",
            content=b"{not json",
            headers={**team.admin_headers, "Content-Type": "application/json"},
        )
        assert_problem(response, 422, "invalid")

    async def test_unknown_user_is_404(self, client: httpx.AsyncClient, team: Team) -> None:
        response = await mint(client, team.admin_headers, user_id="usr_nobody")
        assert_problem(response, 404, "not-found")

    async def test_without_credentials_is_401(self, client: httpx.AsyncClient) -> None:
        response = await client.post("/v1/session-tokens", json={})
        assert_problem(response, 401, "unauthorized")


class TestTokenLifetime:
    async def test_an_expired_token_is_401_saying_so(
        self, client: httpx.AsyncClient, team: Team, clock: FixedClock
    ) -> None:
        token = bearer(await token_for(client, team, team.agent_id, ttl_seconds=60))
        clock.advance(seconds=59)
        assert (await client.get("/v1/me", headers=token)).status_code == 200
        clock.advance(seconds=1)
        body = assert_problem(
            await client.get("/v1/me", headers=token), 401, "session-token-expired"
        )
        assert "expired" in str(body["detail"])

    async def test_revoked_is_401_on_the_very_next_request(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        # The app caches API-key callers (AUTH_CACHE_SECONDS); tokens must not be served
        # from it: warm it first.
        token = bearer(await token_for(client, team, team.agent_id))
        other = bearer(await token_for(client, team, team.outsider_id))
        for _ in range(2):
            assert (await client.get("/v1/me", headers=token)).status_code == 200
        revoked = await client.delete(
            "/v1/session-tokens", params={"user_id": team.agent_id}, headers=team.admin_headers
        )
        assert revoked.status_code == 204, revoked.text
        body = assert_problem(
            await client.get("/v1/me", headers=token), 401, "session-token-revoked"
        )
        assert "revoked" in str(body["detail"])
        assert (await client.get("/v1/me", headers=other)).status_code == 200

    async def test_revoked_from_another_process_is_401_on_the_next_request(
        self, client: httpx.AsyncClient, team: Team, db: SessionMaker
    ) -> None:
        token = bearer(await token_for(client, team, team.agent_id))
        assert (await client.get("/v1/me", headers=token)).status_code == 200
        async with transaction(db) as session:  # raw SQL: no ORM event sees it
            await session.execute(text("UPDATE session_tokens SET revoked_at = now()"))
        assert_problem(await client.get("/v1/me", headers=token), 401, "session-token-revoked")

    async def test_a_token_revokes_its_own_users_tokens_only(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        token = bearer(await token_for(client, team, team.agent_id))
        sibling = bearer(await token_for(client, team, team.agent_id))
        forbidden = await client.delete(
            "/v1/session-tokens", params={"user_id": team.outsider_id}, headers=token
        )
        assert_problem(forbidden, 403, "forbidden")
        assert (await client.delete("/v1/session-tokens", headers=token)).status_code == 204
        for each in (token, sibling):
            assert_problem(await client.get("/v1/me", headers=each), 401, "session-token-revoked")
        # The user's API key still works: revoking tokens is not revoking keys.
        assert (await client.get("/v1/me", headers=team.agent_headers)).status_code == 200

    async def test_an_agent_key_cannot_revoke_another_users_tokens(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        response = await client.delete(
            "/v1/session-tokens", params={"user_id": team.outsider_id}, headers=team.agent_headers
        )
        assert_problem(response, 403, "forbidden")

    async def test_revoking_an_unknown_users_tokens_is_404(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        response = await client.delete(
            "/v1/session-tokens", params={"user_id": "usr_nobody"}, headers=team.admin_headers
        )
        assert_problem(response, 404, "not-found")

    async def test_deleting_the_user_kills_its_tokens(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        token = bearer(await token_for(client, team, team.agent_id))
        assert (await client.get("/v1/me", headers=token)).status_code == 200
        deleted = await client.delete(f"/v1/users/{team.agent_id}", headers=team.admin_headers)
        assert deleted.status_code == 204, deleted.text
        assert_problem(await client.get("/v1/me", headers=token), 401, "session-token-revoked")

    @pytest.mark.parametrize(
        "token",
        [
            pytest.param("ist_short", id="malformed"),
            pytest.param("ist_" + "a" * 16 + "_" + "0" * 64, id="unknown"),
        ],
    )
    async def test_bad_tokens_are_401(self, client: httpx.AsyncClient, token: str) -> None:
        assert_problem(await client.get("/v1/me", headers=bearer(token)), 401, "unauthorized")

    async def test_a_wrong_secret_for_a_real_token_id_is_401(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        token = await token_for(client, team, team.agent_id)
        forged = token[:-8] + "00000000"
        assert_problem(await client.get("/v1/me", headers=bearer(forged)), 401, "unauthorized")

    async def test_access_token_in_the_query_is_ignored_outside_the_stream(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        token = await token_for(client, team, team.agent_id)
        response = await client.get("/v1/me", params={"access_token": token})
        assert_problem(response, 401, "unauthorized")


async def test_each_token_has_its_own_rate_limit_bucket(
    settings: Settings, db: SessionMaker, clock: FixedClock, team: Team
) -> None:
    # Browsers of one office share an address: a token is counted as itself, like a key.
    app = create_app(
        settings.model_copy(update={"rate_limit_per_minute": 3}), sessionmaker=db, clock=clock
    )
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        first = bearer(await token_for(client, team, team.agent_id))
        second = bearer(await token_for(client, team, team.agent_id))
        statuses = [(await client.get("/v1/me", headers=first)).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        other = await client.get("/v1/me", headers=second)
        assert other.status_code == 200
        assert other.headers["RateLimit-Remaining"] == "2"
        # A forged secret for the same token id does not spend (or escape into) its bucket.
        forged = first["Authorization"][:-8] + "00000000"
        response = await client.get("/v1/me", headers={"Authorization": forged})
        assert response.status_code == 401
        assert response.headers["RateLimit-Remaining"] == "2"
