"""Dead credentials open nothing: every /v1 operation answers a revoked API key, an expired
API key, a deleted user's key, a revoked and an expired session token with 401 and writes
nothing, whatever the path ids or the body."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import httpx
import pytest
from fastapi import FastAPI

from inbox_service.core.auth import Caller
from inbox_service.core.clock import FixedClock
from inbox_service.core.db import SessionMaker, transaction
from inbox_service.users import service as users_service
from inbox_service.users.models import User
from inbox_service.users.schemas import ApiKeyIn
from tests.conftest import Team
from tests.security.routes import operations, writes
from tests.support.factories import bearer, make_user

# Reads a live stream until the client leaves; only called with dead credentials here,
# which must be refused before the stream starts (a bounded timeout guards the test).
STREAM = "/v1/events/stream"


@dataclass
class DeadCredentials:
    by_kind: dict[str, str]


async def _key(db: SessionMaker, user: User, clock: FixedClock, **kw: object) -> tuple[str, str]:
    async with transaction(db) as session:
        caller = Caller(user_id=user.id, role="admin", inbox_ids=None)
        key, token = await users_service.create_api_key(
            session,
            caller,
            ApiKeyIn.model_validate(kw),
            now=clock.now(),
        )
        return key.id, token


@pytest.fixture
async def dead(
    db: SessionMaker, client: httpx.AsyncClient, team: Team, clock: FixedClock
) -> DeadCredentials:
    async with transaction(db) as session:
        admin = await make_user(session, role="admin")
        doomed = await make_user(session, role="admin")
    revoked_id, revoked = await _key(db, admin, clock)
    gone = await client.delete(f"/v1/api-keys/{revoked_id}", headers=bearer(revoked))
    assert gone.status_code == 204, gone.text
    _, expired = await _key(db, admin, clock, expires_at=clock.now() + timedelta(minutes=5))
    # Expiry is exact: a key that expires now is already dead.
    _, expiring_now = await _key(db, admin, clock, expires_at=clock.now() + timedelta(minutes=10))
    _, deleted_users = await _key(db, doomed, clock)
    removed = await client.delete(f"/v1/users/{doomed.id}", headers=team.admin_headers)
    assert removed.status_code == 204, removed.text

    admin_key = (await _key(db, admin, clock))[1]
    made = await client.post(
        "/v1/session-tokens", json={"ttl_seconds": 60}, headers=bearer(admin_key)
    )
    assert made.status_code == 201, made.text
    session_expired = made.json()["token"]
    other = await make_user_token(client, team)
    revoke = await client.delete("/v1/session-tokens", headers=bearer(other))
    assert revoke.status_code == 204, revoke.text

    clock.set(clock.now() + timedelta(minutes=10))
    return DeadCredentials(
        {
            "revoked api key": revoked,
            "expired api key": expired,
            "api key expiring this instant": expiring_now,
            "deleted user's api key": deleted_users,
            "expired session token": session_expired,
            "revoked session token": other,
        }
    )


async def make_user_token(client: httpx.AsyncClient, team: Team) -> str:
    made = await client.post("/v1/session-tokens", json={}, headers=team.agent_headers)
    assert made.status_code == 201, made.text
    token: str = made.json()["token"]
    return token


async def test_the_credentials_were_alive_before(
    client: httpx.AsyncClient, team: Team, clock: FixedClock, db: SessionMaker
) -> None:
    """Guards the guard: the same kinds of credentials work while they are live."""
    async with transaction(db) as session:
        admin = await make_user(session, role="admin")
    _, token = await _key(db, admin, clock, expires_at=clock.now() + timedelta(minutes=5))
    assert (await client.get("/v1/me", headers=bearer(token))).status_code == 200
    session_token = await make_user_token(client, team)
    assert (await client.get("/v1/me", headers=bearer(session_token))).status_code == 200


# Operations meant to answer without any credential (a customer's rating link). A new
# route that answers anonymous callers fails the test below until it is listed here.
PUBLIC_PATHS = {"/v1/csat/{token}"}


async def test_every_operation_refuses_dead_credentials_and_writes_nothing(
    app: FastAPI, client: httpx.AsyncClient, db: SessionMaker, team: Team, dead: DeadCredentials
) -> None:
    """A dead credential is refused where credentials are needed (401), and is worth exactly
    what no credential is on the few public routes."""
    ops = operations(app)
    assert len(ops) >= 80
    before = await writes(db)
    for op in ops:
        body: dict[str, object] | None = {} if op.takes_body else None
        anonymous = await client.request(op.method, op.url(), json=body, timeout=5)
        public = anonymous.status_code != 401
        assert public == (op.path in PUBLIC_PATHS), (str(op), anonymous.text)
        for kind, token in dead.by_kind.items():
            response = await client.request(
                op.method, op.url(), json=body, headers=bearer(token), timeout=5
            )
            where = f"{kind}: {op}"
            assert response.status_code == anonymous.status_code, (where, response.text)
            assert token not in response.text, where
            if public:
                continue
            assert response.headers["content-type"].startswith("application/problem+json"), where
            assert response.headers.get("www-authenticate", "").lower().startswith("bearer"), where
    assert await writes(db) == before


async def test_dead_credentials_are_refused_in_the_query_string_too(
    client: httpx.AsyncClient, dead: DeadCredentials
) -> None:
    """The browser's event stream authenticates with `?access_token=`."""
    for kind, token in dead.by_kind.items():
        response = await client.get(STREAM, params={"access_token": token}, timeout=5)
        assert response.status_code == 401, (kind, response.text)
