"""`GET /v1/alerts` and `POST /v1/alerts/{id}/acknowledge`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx

from inbox_service.alerts.service import raise_alert
from inbox_service.core.clock import FixedClock
from inbox_service.core.db import SessionMaker, transaction
from tests.conftest import Team

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


async def seed(db: SessionMaker, team: Team) -> dict[str, str]:
    """One alert of each kind and place; their ids by name."""
    ids = {}
    async with transaction(db) as session:
        for n, (name, kind, inbox) in enumerate(
            [
                ("a_breach", "sla_breached", team.inbox_a),
                ("a_warning", "sla_warning", team.inbox_a),
                ("b_breach", "sla_breached", team.inbox_b),
                ("global", "webhook_disabled", None),
            ]
        ):
            alert = await raise_alert(
                session, kind, name, now=NOW + timedelta(minutes=n), inbox_id=inbox
            )
            ids[name] = alert.id
    return ids


async def names(client: httpx.AsyncClient, query: str, headers: dict[str, str]) -> list[str]:
    response = await client.get(f"/v1/alerts{query}", headers=headers)
    assert response.status_code == 200, response.text
    return [a["message"] for a in response.json()["items"]]


class TestListAlerts:
    async def test_scoped_to_the_callers_inboxes_newest_first(
        self, client: httpx.AsyncClient, db: SessionMaker, team: Team
    ) -> None:
        await seed(db, team)
        assert await names(client, "", team.agent_headers) == ["a_warning", "a_breach"]
        assert await names(client, "", team.outsider_headers) == ["b_breach"]
        assert await names(client, "", team.admin_headers) == [
            "global",
            "b_breach",
            "a_warning",
            "a_breach",
        ]

    async def test_filters_by_kind_inbox_and_acknowledged(
        self, client: httpx.AsyncClient, db: SessionMaker, team: Team
    ) -> None:
        ids = await seed(db, team)
        admin = team.admin_headers
        assert await names(client, "?kind=sla_breached", admin) == ["b_breach", "a_breach"]
        assert await names(client, "?kind=sla_breached&kind=webhook_disabled", admin) == [
            "global",
            "b_breach",
            "a_breach",
        ]
        assert await names(client, f"?inbox_id={team.inbox_a}", admin) == ["a_warning", "a_breach"]
        # Another inbox's id, asked by an agent, finds nothing of it.
        assert await names(client, f"?inbox_id={team.inbox_b}", team.agent_headers) == []
        await client.post(f"/v1/alerts/{ids['a_breach']}/acknowledge", headers=admin)
        assert await names(client, "?acknowledged=true", admin) == ["a_breach"]
        assert "a_breach" not in await names(client, "?acknowledged=false", admin)
        bad = await client.get("/v1/alerts?acknowledged=maybe", headers=admin)
        assert bad.status_code == 422

    async def test_pages_with_a_cursor(
        self, client: httpx.AsyncClient, db: SessionMaker, team: Team
    ) -> None:
        await seed(db, team)
        seen: list[str] = []
        cursor = None
        while True:
            query = "?limit=1" + (f"&cursor={cursor}" if cursor else "")
            response = await client.get(f"/v1/alerts{query}", headers=team.admin_headers)
            body = response.json()
            seen += [a["message"] for a in body["items"]]
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert seen == ["global", "b_breach", "a_warning", "a_breach"]


class TestAcknowledge:
    async def test_records_who_and_when_once(
        self, client: httpx.AsyncClient, db: SessionMaker, team: Team, clock: FixedClock
    ) -> None:
        ids = await seed(db, team)
        clock.set(NOW + timedelta(hours=1))
        response = await client.post(
            f"/v1/alerts/{ids['a_warning']}/acknowledge", headers=team.agent_headers
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["acknowledged_by"], body["kind"]) == (team.agent_id, "sla_warning")
        assert datetime.fromisoformat(body["acknowledged_at"]) == NOW + timedelta(hours=1)
        clock.set(NOW + timedelta(hours=2))
        again = await client.post(
            f"/v1/alerts/{ids['a_warning']}/acknowledge", headers=team.admin_headers
        )
        assert again.json()["acknowledged_by"] == team.agent_id
        assert datetime.fromisoformat(again.json()["acknowledged_at"]) == NOW + timedelta(hours=1)

    async def test_another_inbox_or_unknown_alert_is_404(
        self, client: httpx.AsyncClient, db: SessionMaker, team: Team
    ) -> None:
        ids = await seed(db, team)
        for alert_id in (ids["b_breach"], ids["global"], "alr_nope"):
            response = await client.post(
                f"/v1/alerts/{alert_id}/acknowledge", headers=team.agent_headers
            )
            assert response.status_code == 404
            assert response.headers["content-type"].startswith("application/problem+json")
        listed = await client.get("/v1/alerts?acknowledged=true", headers=team.admin_headers)
        assert listed.json()["items"] == []

    async def test_needs_a_key(self, client: httpx.AsyncClient) -> None:
        assert (await client.get("/v1/alerts")).status_code == 401
