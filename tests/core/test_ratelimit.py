"""Rate limits: a fixed one-minute window per API key (or client address without a key)."""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from inbox_service.core.auth import new_api_key, parse_api_key
from inbox_service.core.clock import FixedClock
from inbox_service.core.config import Settings
from inbox_service.core.db import SessionMaker, transaction
from inbox_service.inboxes.models import Inbox
from tests.conftest import Team
from tests.support.factories import bearer

LIMIT = 3
PROBLEM_JSON = "application/problem+json"

ClientAt = Callable[[str], AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def settings() -> Settings:
    return Settings(
        database_url="postgresql+asyncpg://unused/unused",
        rate_limit_per_minute=LIMIT,
        max_body_bytes=64 * 1024,
    )


@pytest.fixture
def client_at(app: FastAPI) -> ClientAt:
    """A client whose requests come from the address `host`."""

    @asynccontextmanager
    async def open_client(host: str) -> AsyncIterator[httpx.AsyncClient]:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, client=(host, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield http

    return open_client


async def use_up(client: httpx.AsyncClient, headers: dict[str, str] | None = None) -> None:
    for _ in range(LIMIT):
        response = await client.get("/v1/me", headers=headers)
        assert response.status_code != 429


class TestRateLimit:
    async def test_answers_carry_ratelimit_headers(
        self, client: httpx.AsyncClient, team: Team, clock: FixedClock
    ) -> None:
        clock.advance(seconds=15)  # 09:00:15: the window resets in 45 s

        responses = [await client.get("/v1/me", headers=team.agent_headers) for _ in range(LIMIT)]

        assert [r.status_code for r in responses] == [200, 200, 200]
        assert [r.headers["RateLimit-Limit"] for r in responses] == ["3", "3", "3"]
        assert [r.headers["RateLimit-Remaining"] for r in responses] == ["2", "1", "0"]
        assert [r.headers["RateLimit-Reset"] for r in responses] == ["45", "45", "45"]

    async def test_reset_counts_down_within_the_window(
        self, client: httpx.AsyncClient, team: Team, clock: FixedClock
    ) -> None:
        clock.advance(seconds=59, microseconds=500_000)
        response = await client.get("/v1/me", headers=team.agent_headers)
        assert response.headers["RateLimit-Reset"] == "1"  # rounded up, never 0

    async def test_request_over_the_limit_is_429_with_retry_after(
        self, client: httpx.AsyncClient, team: Team, clock: FixedClock
    ) -> None:
        clock.advance(seconds=20)
        await use_up(client, team.agent_headers)

        response = await client.get("/v1/me", headers=team.agent_headers)

        assert response.status_code == 429
        assert response.headers["Content-Type"] == PROBLEM_JSON
        problem = response.json()
        assert problem["status"] == 429
        assert problem["type"].endswith("/rate-limited")
        assert response.headers["Retry-After"] == "40"
        assert response.headers["RateLimit-Limit"] == "3"
        assert response.headers["RateLimit-Remaining"] == "0"
        assert response.headers["RateLimit-Reset"] == "40"

    async def test_limited_write_does_nothing(
        self, client: httpx.AsyncClient, team: Team, db: SessionMaker
    ) -> None:
        await use_up(client, team.admin_headers)
        async with transaction(db) as s:
            before = await s.scalar(select(func.count()).select_from(Inbox))

        body = {"name": "Sales", "address": "sales@example.com"}
        response = await client.post("/v1/inboxes", json=body, headers=team.admin_headers)

        assert response.status_code == 429
        async with transaction(db) as s:
            assert await s.scalar(select(func.count()).select_from(Inbox)) == before

    async def test_later_in_the_same_minute_is_still_limited(
        self, client: httpx.AsyncClient, team: Team, clock: FixedClock
    ) -> None:
        await use_up(client, team.agent_headers)
        clock.advance(seconds=59)
        response = await client.get("/v1/me", headers=team.agent_headers)
        assert response.status_code == 429
        assert response.headers["Retry-After"] == "1"

    async def test_a_new_minute_resets_the_count(
        self, client: httpx.AsyncClient, team: Team, clock: FixedClock
    ) -> None:
        clock.advance(seconds=30)
        await use_up(client, team.agent_headers)
        assert (await client.get("/v1/me", headers=team.agent_headers)).status_code == 429

        clock.advance(seconds=30)  # 09:01:00, a new window
        response = await client.get("/v1/me", headers=team.agent_headers)

        assert response.status_code == 200
        assert response.headers["RateLimit-Remaining"] == "2"
        assert response.headers["RateLimit-Reset"] == "60"

    async def test_keys_have_separate_buckets(self, client: httpx.AsyncClient, team: Team) -> None:
        await use_up(client, team.agent_headers)
        assert (await client.get("/v1/me", headers=team.agent_headers)).status_code == 429

        other = await client.get("/v1/me", headers=team.outsider_headers)

        assert other.status_code == 200
        assert other.headers["RateLimit-Remaining"] == "2"

    async def test_healthz_is_not_limited(self, client_at: ClientAt) -> None:
        async with client_at("10.0.0.1") as http:
            for _ in range(LIMIT + 2):
                health = await http.get("/healthz")
                assert health.status_code == 200
                assert "RateLimit-Limit" not in health.headers
            # ...nor counted against the address's bucket.
            response = await http.get("/v1/me")
        assert response.status_code == 401
        assert response.headers["RateLimit-Remaining"] == "2"

    async def test_requests_without_key_are_limited_by_address(
        self, client_at: ClientAt, team: Team
    ) -> None:
        async with client_at("10.0.0.1") as first, client_at("10.0.0.2") as second:
            await use_up(first)
            limited = await first.get("/v1/me")
            malformed = await first.get("/v1/me", headers={"Authorization": "Bearer nope"})
            with_key = await first.get("/v1/me", headers=team.agent_headers)
            elsewhere = await second.get("/v1/me")

        assert limited.status_code == 429
        assert limited.headers["Content-Type"] == PROBLEM_JSON
        assert malformed.status_code == 429  # a malformed key counts as no key
        assert with_key.status_code == 200  # a key has its own bucket, wherever it comes from
        assert elsewhere.status_code == 401
        assert elsewhere.headers["RateLimit-Remaining"] == "2"

    async def test_made_up_keys_are_limited_by_address(self, client_at: ClientAt) -> None:
        # Well-formed (the checksum is public) but unknown: a fresh one per request must not
        # buy a fresh bucket.
        async with client_at("10.0.0.3") as http:
            answers = [
                await http.get("/v1/me", headers=bearer(new_api_key().token))
                for _ in range(LIMIT + 1)
            ]
        assert [a.status_code for a in answers] == [401, 401, 401, 429]

    async def test_wrong_secret_does_not_use_up_the_owners_bucket(
        self, client: httpx.AsyncClient, client_at: ClientAt, team: Team
    ) -> None:
        parsed = parse_api_key(team.agent_headers["Authorization"].removeprefix("Bearer "))
        assert parsed is not None
        body = f"isk_{parsed[0]}_{'0' * 64}"
        forged = bearer(f"{body}{zlib.crc32(body.encode()):08x}")
        async with client_at("10.0.0.3") as http:
            answers = [await http.get("/v1/me", headers=forged) for _ in range(LIMIT + 1)]
        assert [a.status_code for a in answers] == [401, 401, 401, 429]

        response = await client.get("/v1/me", headers=team.agent_headers)

        assert response.status_code == 200
        assert response.headers["RateLimit-Remaining"] == "2"

    async def test_idempotent_replays_count(self, client: httpx.AsyncClient, team: Team) -> None:
        headers = {**team.admin_headers, "Idempotency-Key": "again"}
        body = {"name": "Sales", "address": "sales@example.com"}
        answers = [
            await client.post("/v1/inboxes", json=body, headers=headers) for _ in range(LIMIT + 1)
        ]
        assert [a.status_code for a in answers] == [201, 201, 201, 429]
        assert answers[1].headers["RateLimit-Remaining"] == "1"  # on a replayed answer too
