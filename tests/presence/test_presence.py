"""Presence heartbeats: appear, renew, expire on the injected clock, leave."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from sqlalchemy import func, select

from inbox_service.core.clock import FixedClock
from inbox_service.core.db import SessionMaker, transaction
from inbox_service.presence.jobs import expire_presence
from inbox_service.presence.models import Presence
from tests.assignment.support import ingest, mail
from tests.conftest import Team


@pytest.fixture
async def conversation_id(db: SessionMaker, team: Team, clock: FixedClock) -> str:
    [cid] = await ingest(db, team.inbox_a, [mail("presence")], now=clock.now())
    return cid


def path(cid: str) -> str:
    return f"/v1/conversations/{cid}/presence"


async def rows(db: SessionMaker) -> int:
    async with transaction(db) as session:
        return int(await session.scalar(select(func.count()).select_from(Presence)) or 0)


class TestHeartbeat:
    async def test_appears_with_who_and_until_when(
        self, client: httpx.AsyncClient, team: Team, conversation_id: str, clock: FixedClock
    ) -> None:
        put = await client.put(
            path(conversation_id), json={"state": "viewing"}, headers=team.agent_headers
        )
        assert put.status_code == 200, put.text
        body = put.json()
        assert body["conversation_id"] == conversation_id
        assert body["ttl_seconds"] == 30
        assert body["composers"] == []
        [viewer] = body["viewers"]
        assert viewer["user_id"] == team.agent_id
        assert viewer["name"]
        assert viewer["state"] == "viewing"
        assert viewer["expires_at"] == (clock.now() + timedelta(seconds=30)).isoformat().replace(
            "+00:00", "Z"
        )
        got = await client.get(path(conversation_id), headers=team.admin_headers)
        assert got.json() == body

    async def test_renewal_keeps_it_and_the_ttl_ends_it(
        self, client: httpx.AsyncClient, team: Team, conversation_id: str, clock: FixedClock
    ) -> None:
        start = clock.now()
        await client.put(
            path(conversation_id), json={"state": "viewing"}, headers=team.agent_headers
        )
        clock.advance(seconds=20)
        renewed = await client.put(
            path(conversation_id), json={"state": "viewing"}, headers=team.agent_headers
        )
        [viewer] = renewed.json()["viewers"]
        assert viewer["since"].startswith(start.isoformat()[:19])  # the same visit
        clock.advance(seconds=29)  # 49 s after the first beat, 29 after the renewal
        assert (
            len(
                (await client.get(path(conversation_id), headers=team.admin_headers)).json()[
                    "viewers"
                ]
            )
            == 1
        )
        clock.advance(seconds=1)  # 30 s without renewal
        gone = await client.get(path(conversation_id), headers=team.admin_headers)
        assert gone.json()["viewers"] == []

    async def test_composing_moves_them_to_composers(
        self, client: httpx.AsyncClient, team: Team, conversation_id: str, clock: FixedClock
    ) -> None:
        await client.put(
            path(conversation_id), json={"state": "viewing"}, headers=team.agent_headers
        )
        await client.put(
            path(conversation_id), json={"state": "viewing"}, headers=team.admin_headers
        )
        clock.advance(seconds=5)
        body = (
            await client.put(
                path(conversation_id), json={"state": "composing"}, headers=team.agent_headers
            )
        ).json()
        assert [v["user_id"] for v in body["viewers"]] == [team.admin_id]
        [composer] = body["composers"]
        assert composer["user_id"] == team.agent_id
        assert composer["since"].startswith(clock.now().isoformat()[:19])

    async def test_leaving_ends_it_at_once_and_twice_is_fine(
        self, client: httpx.AsyncClient, team: Team, conversation_id: str
    ) -> None:
        await client.put(
            path(conversation_id), json={"state": "viewing"}, headers=team.agent_headers
        )
        first = await client.delete(path(conversation_id), headers=team.agent_headers)
        assert first.status_code == 204
        assert (await client.get(path(conversation_id), headers=team.agent_headers)).json()[
            "viewers"
        ] == []
        assert (
            await client.delete(path(conversation_id), headers=team.agent_headers)
        ).status_code == 204


class TestConversationDetail:
    async def test_shows_viewers_and_composers(
        self, client: httpx.AsyncClient, team: Team, conversation_id: str, clock: FixedClock
    ) -> None:
        await client.put(
            path(conversation_id), json={"state": "composing"}, headers=team.agent_headers
        )
        await client.put(
            path(conversation_id), json={"state": "viewing"}, headers=team.admin_headers
        )
        detail = (
            await client.get(f"/v1/conversations/{conversation_id}", headers=team.agent_headers)
        ).json()
        assert [v["user_id"] for v in detail["viewers"]] == [team.admin_id]
        assert [c["user_id"] for c in detail["composers"]] == [team.agent_id]
        clock.advance(seconds=31)
        later = (
            await client.get(f"/v1/conversations/{conversation_id}", headers=team.agent_headers)
        ).json()
        assert later["viewers"] == later["composers"] == []


class TestBadRequests:
    async def test_another_inbox_is_404_and_nothing_is_stored(
        self, client: httpx.AsyncClient, team: Team, conversation_id: str, db: SessionMaker
    ) -> None:
        for method in ("PUT", "GET", "DELETE"):
            response = await client.request(
                method,
                path(conversation_id),
                json={"state": "viewing"} if method == "PUT" else None,
                headers=team.outsider_headers,
            )
            assert response.status_code == 404, method
            assert response.headers["content-type"] == "application/problem+json"
        assert (
            await client.put(
                path("cnv_nope"), json={"state": "viewing"}, headers=team.agent_headers
            )
        ).status_code == 404
        assert await rows(db) == 0

    @pytest.mark.parametrize(
        "body",
        [{"state": "typing"}, {}, {"state": "viewing", "extra": 1}, {"state": 3}],
    )
    async def test_bad_bodies_are_422_naming_the_field(
        self,
        client: httpx.AsyncClient,
        team: Team,
        conversation_id: str,
        body: object,
        db: SessionMaker,
    ) -> None:
        response = await client.put(path(conversation_id), json=body, headers=team.agent_headers)
        assert response.status_code == 422
        assert response.json()["errors"][0]["loc"][0] == "body"
        assert await rows(db) == 0

    async def test_malformed_json_is_422(
        self, client: httpx.AsyncClient, team: Team, conversation_id: str
    ) -> None:
        response = await client.put(
            path(conversation_id),
            content=b"{state",
            headers={**team.agent_headers, "content-type": "application/json"},
        )
        assert response.status_code == 422


class TestExpiry:
    async def test_the_sweeper_removes_only_lapsed_heartbeats_once(
        self,
        client: httpx.AsyncClient,
        team: Team,
        conversation_id: str,
        clock: FixedClock,
        db: SessionMaker,
    ) -> None:
        await client.put(
            path(conversation_id), json={"state": "viewing"}, headers=team.agent_headers
        )
        clock.advance(seconds=20)
        await client.put(
            path(conversation_id), json={"state": "viewing"}, headers=team.admin_headers
        )
        clock.advance(seconds=15)  # the agent's lapsed, the admin's has 15 s left
        assert await expire_presence(db, clock) == 1
        assert await expire_presence(db, clock) == 0
        assert await rows(db) == 1
        clock.advance(seconds=15)
        assert await expire_presence(db, clock) == 1
        assert await rows(db) == 0
