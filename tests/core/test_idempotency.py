"""`Idempotency-Key` on POST: one object per key and body, replayed answers, 409/422 cases.

Decisions these tests pin down (see the module docstring of `core/idempotency.py`):

* a handler's 4xx answer is stored and replayed like a 2xx: the key stands for "this
  request", and the client learns the same outcome every time it retries;
* a 5xx answer (or an exception) is not stored: the retry runs again;
* bodies are compared byte for byte, so the same JSON with other whitespace is "another body";
* stored answers keep the headers that describe them (Location, ETag, WWW-Authenticate, Allow);
* keys belong to the credential (the `Authorization` header), not to the user.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy import func, select, update

from inbox_service.app import create_app
from inbox_service.core.clock import FixedClock
from inbox_service.core.config import Settings
from inbox_service.core.db import Base, SessionMaker, transaction
from inbox_service.core.events import Event
from inbox_service.core.idempotency import IdempotencyKey
from inbox_service.inboxes.models import Inbox
from inbox_service.users.models import User
from tests.conftest import CommittedDb, Team
from tests.support.factories import bearer, make_key, make_user

PROBLEM_JSON = "application/problem+json"
SALES = {"name": "Sales", "address": "sales@example.com"}


async def count(db: SessionMaker, model: type[Base]) -> int:
    async with transaction(db) as s:
        return int(await s.scalar(select(func.count()).select_from(model)) or 0)


def with_key(headers: dict[str, str], key: str) -> dict[str, str]:
    return {**headers, "Idempotency-Key": key}


async def set_in_progress(
    db: SessionMaker, key: str, *, locked_for: timedelta, now: datetime
) -> None:
    """Turn the stored row of `key` back into a claim without an answer, leased until now+delta."""
    async with transaction(db) as s:
        await s.execute(
            update(IdempotencyKey)
            .where(IdempotencyKey.key == key)
            .values(
                response_status=None,
                response_headers=None,
                response_body=None,
                locked_until=now + locked_for,
            )
        )


class TestIdempotencyKey:
    async def test_same_key_same_body_creates_once(
        self, client: httpx.AsyncClient, team: Team, db: SessionMaker
    ) -> None:
        headers = with_key(team.admin_headers, "create-sales-1")
        inboxes, events = await count(db, Inbox), await count(db, Event)

        first = await client.post("/v1/inboxes", json=SALES, headers=headers)
        second = await client.post("/v1/inboxes", json=SALES, headers=headers)

        assert first.status_code == 201, first.text
        assert "Idempotent-Replayed" not in first.headers
        assert second.status_code == 201
        assert second.content == first.content
        assert second.headers["Idempotent-Replayed"] == "true"
        assert second.headers["Location"] == first.headers["Location"]
        assert second.headers["Location"] == f"/v1/inboxes/{first.json()['id']}"
        assert second.headers["ETag"] == first.headers["ETag"]
        assert second.headers["Content-Type"] == first.headers["Content-Type"]
        assert await count(db, Inbox) == inboxes + 1
        assert await count(db, Event) == events + 1  # the inbox.created event, once

    async def test_without_key_each_post_runs(
        self, client: httpx.AsyncClient, team: Team, db: SessionMaker
    ) -> None:
        before = await count(db, Inbox)
        first = await client.post("/v1/inboxes", json=SALES, headers=team.admin_headers)
        second = await client.post("/v1/inboxes", json=SALES, headers=team.admin_headers)
        assert first.status_code == second.status_code == 201
        assert first.json()["id"] != second.json()["id"]
        assert await count(db, Inbox) == before + 2

    async def test_same_key_other_body_is_422_and_creates_nothing(
        self, client: httpx.AsyncClient, team: Team, db: SessionMaker
    ) -> None:
        headers = with_key(team.admin_headers, "create-sales-2")
        first = await client.post("/v1/inboxes", json=SALES, headers=headers)
        assert first.status_code == 201
        before = await count(db, Inbox)

        other = {"name": "Billing", "address": "billing@example.com"}
        response = await client.post("/v1/inboxes", json=other, headers=headers)

        assert response.status_code == 422
        assert response.headers["Content-Type"] == PROBLEM_JSON
        problem = response.json()
        assert problem["status"] == 422
        assert problem["type"].endswith("/idempotency-key-reused")
        assert "Idempotent-Replayed" not in response.headers
        assert await count(db, Inbox) == before

    async def test_same_json_with_other_whitespace_is_another_body(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        headers = {**with_key(team.admin_headers, "ws"), "Content-Type": "application/json"}
        first = await client.post("/v1/inboxes", content=json.dumps(SALES), headers=headers)
        second = await client.post(
            "/v1/inboxes", content=json.dumps(SALES, indent=2), headers=headers
        )
        assert first.status_code == 201
        assert second.status_code == 422

    async def test_same_key_other_path_is_422(
        self, client: httpx.AsyncClient, team: Team, db: SessionMaker
    ) -> None:
        headers = with_key(team.admin_headers, "shared-key")
        assert (await client.post("/v1/inboxes", json=SALES, headers=headers)).status_code == 201
        users = await count(db, User)

        new_user = {"email": "new@example.com", "name": "New"}
        response = await client.post("/v1/users", json=new_user, headers=headers)

        assert response.status_code == 422
        assert response.json()["type"].endswith("/idempotency-key-reused")
        assert await count(db, User) == users

    async def test_same_key_from_another_api_key_runs_independently(
        self, client: httpx.AsyncClient, team: Team, db: SessionMaker
    ) -> None:
        async with transaction(db) as s:
            admin = await s.get_one(User, team.admin_id)
            second_key = bearer(await make_key(s, admin))
        before = await count(db, Inbox)

        first = await client.post(
            "/v1/inboxes", json=SALES, headers=with_key(team.admin_headers, "k")
        )
        second = await client.post("/v1/inboxes", json=SALES, headers=with_key(second_key, "k"))

        assert first.status_code == second.status_code == 201
        assert "Idempotent-Replayed" not in second.headers
        assert first.json()["id"] != second.json()["id"]
        assert await count(db, Inbox) == before + 2

    async def test_another_callers_answer_is_not_replayed(
        self, client: httpx.AsyncClient, team: Team, db: SessionMaker
    ) -> None:
        # The admin's 201 must not leak to an agent who guesses the key, nor the reverse.
        admin = await client.post(
            "/v1/inboxes", json=SALES, headers=with_key(team.admin_headers, "k")
        )
        agent = await client.post(
            "/v1/inboxes", json=SALES, headers=with_key(team.agent_headers, "k")
        )
        assert admin.status_code == 201
        assert agent.status_code == 403
        assert "Idempotent-Replayed" not in agent.headers

    async def test_replays_within_24_hours(
        self, client: httpx.AsyncClient, team: Team, db: SessionMaker, clock: FixedClock
    ) -> None:
        headers = with_key(team.admin_headers, "day-old")
        first = await client.post("/v1/inboxes", json=SALES, headers=headers)
        clock.advance(hours=23, minutes=59)

        again = await client.post("/v1/inboxes", json=SALES, headers=headers)

        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.content == first.content

    async def test_key_reused_after_24_hours_runs_again(
        self, client: httpx.AsyncClient, team: Team, db: SessionMaker, clock: FixedClock
    ) -> None:
        headers = with_key(team.admin_headers, "day-old")
        first = await client.post("/v1/inboxes", json=SALES, headers=headers)
        before = await count(db, Inbox)
        clock.advance(hours=24, seconds=1)

        again = await client.post("/v1/inboxes", json=SALES, headers=headers)

        assert again.status_code == 201
        assert "Idempotent-Replayed" not in again.headers
        assert again.json()["id"] != first.json()["id"]
        assert await count(db, Inbox) == before + 1

    async def test_key_reused_after_24_hours_with_other_body_runs(
        self, client: httpx.AsyncClient, team: Team, db: SessionMaker, clock: FixedClock
    ) -> None:
        headers = with_key(team.admin_headers, "day-old")
        assert (await client.post("/v1/inboxes", json=SALES, headers=headers)).status_code == 201
        clock.advance(hours=25)

        other = {"name": "Billing", "address": "billing@example.com"}
        response = await client.post("/v1/inboxes", json=other, headers=headers)

        assert response.status_code == 201
        assert response.json()["name"] == "Billing"

    async def test_handler_4xx_is_stored_and_replayed(
        self, client: httpx.AsyncClient, team: Team, db: SessionMaker
    ) -> None:
        """A 4xx is the outcome of the request: retrying with the key gets it again."""
        taken = await client.post(
            "/v1/users",
            json={"email": "dup@example.com", "name": "Dup"},
            headers=team.admin_headers,
        )
        body = {"email": "dup@example.com", "name": "Second"}
        headers = with_key(team.admin_headers, "create-dup")
        conflict = await client.post("/v1/users", json=body, headers=headers)
        assert conflict.status_code == 409
        # Free the address: running the request again would now succeed...
        deleted = await client.delete(f"/v1/users/{taken.json()['id']}", headers=team.admin_headers)
        assert deleted.status_code == 204
        users = await count(db, User)

        replay = await client.post("/v1/users", json=body, headers=headers)

        # ...but the key replays the first outcome and does nothing.
        assert replay.status_code == 409
        assert replay.headers["Idempotent-Replayed"] == "true"
        assert replay.headers["Content-Type"] == PROBLEM_JSON
        assert replay.content == conflict.content
        assert await count(db, User) == users
        fresh = await client.post("/v1/users", json=body, headers=team.admin_headers)
        assert fresh.status_code == 201  # the same request without the key runs

    @pytest.mark.parametrize("failure", ["exception", "503 answer"])
    async def test_handler_5xx_is_not_stored_and_retry_runs(
        self, app: FastAPI, client: httpx.AsyncClient, team: Team, failure: str
    ) -> None:
        """A 5xx says nothing about the request itself: the retry runs again."""
        calls: list[int] = []

        async def flaky() -> JSONResponse:
            calls.append(1)
            if len(calls) == 1 and failure == "exception":
                raise RuntimeError("database went away")
            if len(calls) == 1:
                return JSONResponse({"detail": "try later"}, status_code=503)
            return JSONResponse({"call": len(calls)}, status_code=201)

        app.add_api_route("/v1/flaky", flaky, methods=["POST"])
        headers = with_key(team.admin_headers, "flaky-1")

        failed = await client.post("/v1/flaky", json={}, headers=headers)
        retried = await client.post("/v1/flaky", json={}, headers=headers)
        replayed = await client.post("/v1/flaky", json={}, headers=headers)

        assert failed.status_code in (500, 503)
        assert retried.status_code == 201
        assert retried.json() == {"call": 2}
        assert "Idempotent-Replayed" not in retried.headers
        assert replayed.headers["Idempotent-Replayed"] == "true"
        assert replayed.json() == {"call": 2}
        assert len(calls) == 2

    async def test_request_in_progress_is_409(
        self, client: httpx.AsyncClient, team: Team, db: SessionMaker, clock: FixedClock
    ) -> None:
        headers = with_key(team.admin_headers, "slow")
        assert (await client.post("/v1/inboxes", json=SALES, headers=headers)).status_code == 201
        await set_in_progress(db, "slow", locked_for=timedelta(seconds=30), now=clock.now())
        before = await count(db, Inbox)

        response = await client.post("/v1/inboxes", json=SALES, headers=headers)

        assert response.status_code == 409
        assert response.headers["Content-Type"] == PROBLEM_JSON
        assert response.json()["type"].endswith("/idempotent-request-in-progress")
        assert await count(db, Inbox) == before

    async def test_request_in_progress_with_other_body_is_422(
        self, client: httpx.AsyncClient, team: Team, db: SessionMaker, clock: FixedClock
    ) -> None:
        headers = with_key(team.admin_headers, "slow")
        assert (await client.post("/v1/inboxes", json=SALES, headers=headers)).status_code == 201
        await set_in_progress(db, "slow", locked_for=timedelta(seconds=30), now=clock.now())

        other = {"name": "Billing", "address": "billing@example.com"}
        response = await client.post("/v1/inboxes", json=other, headers=headers)

        assert response.status_code == 422

    async def test_abandoned_request_with_same_body_runs(
        self, client: httpx.AsyncClient, team: Team, db: SessionMaker, clock: FixedClock
    ) -> None:
        """A claim whose lease ran out (its process died) is taken over by the retry."""
        headers = with_key(team.admin_headers, "crashed")
        assert (await client.post("/v1/inboxes", json=SALES, headers=headers)).status_code == 201
        await set_in_progress(db, "crashed", locked_for=timedelta(seconds=-1), now=clock.now())
        before = await count(db, Inbox)

        retried = await client.post("/v1/inboxes", json=SALES, headers=headers)
        replayed = await client.post("/v1/inboxes", json=SALES, headers=headers)

        assert retried.status_code == 201
        assert "Idempotent-Replayed" not in retried.headers
        assert await count(db, Inbox) == before + 1
        assert replayed.headers["Idempotent-Replayed"] == "true"
        assert replayed.content == retried.content

    async def test_abandoned_request_with_other_body_is_422(
        self, client: httpx.AsyncClient, team: Team, db: SessionMaker, clock: FixedClock
    ) -> None:
        headers = with_key(team.admin_headers, "crashed")
        assert (await client.post("/v1/inboxes", json=SALES, headers=headers)).status_code == 201
        await set_in_progress(db, "crashed", locked_for=timedelta(seconds=-1), now=clock.now())
        before = await count(db, Inbox)

        other = {"name": "Billing", "address": "billing@example.com"}
        response = await client.post("/v1/inboxes", json=other, headers=headers)

        assert response.status_code == 422
        assert await count(db, Inbox) == before

    async def test_key_of_255_characters_is_accepted(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        headers = with_key(team.admin_headers, "k" * 255)
        first = await client.post("/v1/inboxes", json=SALES, headers=headers)
        second = await client.post("/v1/inboxes", json=SALES, headers=headers)
        assert first.status_code == 201
        assert second.headers["Idempotent-Replayed"] == "true"

    @pytest.mark.parametrize("key", ["k" * 256, ""], ids=["256 characters", "empty"])
    async def test_bad_key_is_422_and_creates_nothing(
        self, client: httpx.AsyncClient, team: Team, db: SessionMaker, key: str
    ) -> None:
        before = await count(db, Inbox)
        response = await client.post(
            "/v1/inboxes", json=SALES, headers=with_key(team.admin_headers, key)
        )
        assert response.status_code == 422
        assert response.headers["Content-Type"] == PROBLEM_JSON
        problem = response.json()
        assert "255" in problem["detail"]
        assert [e["loc"] for e in problem["errors"]] == [["header", "Idempotency-Key"]]
        assert await count(db, Inbox) == before
        assert await count(db, IdempotencyKey) == 0

    async def test_replayed_401_keeps_www_authenticate(self, client: httpx.AsyncClient) -> None:
        headers = {"Authorization": "Bearer not-a-key", "Idempotency-Key": "anon"}
        first = await client.post("/v1/inboxes", json=SALES, headers=headers)
        replay = await client.post("/v1/inboxes", json=SALES, headers=headers)
        assert first.status_code == replay.status_code == 401
        assert replay.headers["Idempotent-Replayed"] == "true"
        assert replay.headers["WWW-Authenticate"] == first.headers["WWW-Authenticate"] == "Bearer"

    async def test_replayed_405_keeps_allow(self, client: httpx.AsyncClient, team: Team) -> None:
        headers = with_key(team.admin_headers, "wrong-method")
        first = await client.post("/v1/me", json={}, headers=headers)
        replay = await client.post("/v1/me", json={}, headers=headers)
        assert first.status_code == replay.status_code == 405
        assert replay.headers["Idempotent-Replayed"] == "true"
        assert replay.headers["Allow"] == first.headers["Allow"]

    async def test_get_ignores_the_header(
        self, client: httpx.AsyncClient, team: Team, db: SessionMaker
    ) -> None:
        headers = with_key(team.admin_headers, "k" * 300)  # too long for a POST, ignored here
        first = await client.get("/v1/inboxes", headers=headers)
        await client.post("/v1/inboxes", json=SALES, headers=team.admin_headers)
        second = await client.get("/v1/inboxes", headers=headers)

        assert first.status_code == second.status_code == 200
        assert "Idempotent-Replayed" not in second.headers
        assert len(second.json()["items"]) == len(first.json()["items"]) + 1
        assert await count(db, IdempotencyKey) == 0


# -- two requests at once: needs real commits and several connections -------------------


@pytest.fixture
async def committed_app(committed_db: CommittedDb, clock: FixedClock) -> FastAPI:
    settings = Settings(
        database_url=committed_db.url, rate_limit_per_minute=0, max_body_bytes=64 * 1024
    )
    return create_app(settings, sessionmaker=committed_db.sessionmaker, clock=clock)


@pytest.fixture
async def committed_client(committed_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=committed_app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


class TestIdempotencyKeyConcurrently:
    async def test_identical_posts_at_once_create_one_object(
        self, committed_client: httpx.AsyncClient, committed_db: CommittedDb
    ) -> None:
        async with transaction(committed_db.sessionmaker) as s:
            admin = await make_user(s, role="admin")
            headers = with_key(bearer(await make_key(s, admin)), "at-once")

        responses = await asyncio.gather(
            *(committed_client.post("/v1/inboxes", json=SALES, headers=headers) for _ in range(5))
        )

        assert await count(committed_db.sessionmaker, Inbox) == 1
        created = [r for r in responses if r.status_code == 201]
        originals = [r for r in created if "Idempotent-Replayed" not in r.headers]
        assert len(originals) == 1
        assert all(r.content == originals[0].content for r in created)
        others = [r for r in responses if r.status_code != 201]
        assert all(r.status_code == 409 for r in others), [r.text for r in others]


class TestIdempotencyClaims:
    async def test_a_request_that_outlived_its_lease_cannot_clobber_the_retry(
        self, db: SessionMaker, clock: FixedClock
    ) -> None:
        from inbox_service.core.asgi import CapturedResponse
        from inbox_service.core.idempotency import LEASE, IdempotencyMiddleware

        middleware = IdempotencyMiddleware(FastAPI(), sessionmaker=lambda: db, clock=lambda: clock)
        assert (await middleware._claim("owner", "k1", "hash", "first"))[0]
        clock.advance(LEASE + timedelta(seconds=1))  # the first request is stuck
        assert (await middleware._claim("owner", "k1", "hash", "retry"))[0]
        late = CapturedResponse(status=500)
        await middleware._finish("owner", "k1", "first", late)  # would delete the key
        done = CapturedResponse(status=201, body=bytearray(b"{}"))
        await middleware._finish("owner", "k1", "retry", done)
        async with transaction(db) as session:
            row = await session.get_one(IdempotencyKey, ("owner", "k1"))
            assert (row.response_status, row.response_body, row.claim) == (201, b"{}", None)
