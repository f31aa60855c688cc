"""`/v1/sla-policies`: CRUD, bad policies answered 422 naming the field, the dry run."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from inbox_service.core.clock import FixedClock
from inbox_service.core.db import SessionMaker, transaction
from tests.conftest import Team
from tests.sla.support import POLICY, create_policy, metric, receive

BERLIN = ZoneInfo("Europe/Berlin")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri")
OFFICE = {
    "timezone": "Europe/Berlin",
    "intervals": [{"day": d, "start": "09:00", "end": "18:00"} for d in WEEKDAYS],
    "holidays": ["2026-12-25"],
}


def with_hours(**hours: Any) -> dict[str, Any]:
    return {**POLICY, "business_hours": {**OFFICE, **hours}}


class TestCrud:
    async def test_create_read_list_update_delete(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        response = await client.post(
            "/v1/sla-policies",
            json={
                **with_hours(),
                "inbox_ids": [team.inbox_a],
                "warn_before": None,
                "warn_before_percent": 20,
            },
            headers=team.admin_headers,
        )
        assert response.status_code == 201, response.text
        created = response.json()
        assert response.headers["Location"] == f"/v1/sla-policies/{created['id']}"
        assert response.headers["ETag"] == '"1"'
        assert created["inbox_ids"] == [team.inbox_a]
        assert created["warn_before_percent"] == 20
        assert created["business_hours"]["holidays"] == ["2026-12-25"]
        assert created["targets"]["normal"]["first_response"] == 3600
        got = await client.get(f"/v1/sla-policies/{created['id']}", headers=team.agent_headers)
        assert got.json() == created
        listed = await client.get("/v1/sla-policies", headers=team.agent_headers)
        assert [p["id"] for p in listed.json()["items"]] == [created["id"]]
        # A duration replaces the share; around the clock replaces the office hours.
        patched = await client.patch(
            f"/v1/sla-policies/{created['id']}",
            json={"warn_before": 300, "business_hours": None},
            headers=team.admin_headers,
        )
        assert patched.status_code == 200, patched.text
        body = patched.json()
        assert (body["warn_before"], body["warn_before_percent"], body["business_hours"]) == (
            300,
            None,
            None,
        )
        deleted = await client.delete(
            f"/v1/sla-policies/{created['id']}", headers=team.admin_headers
        )
        assert deleted.status_code == 204
        missing = await client.get(f"/v1/sla-policies/{created['id']}", headers=team.admin_headers)
        assert missing.status_code == 404
        assert missing.headers["content-type"].startswith("application/problem+json")

    async def test_agents_cannot_write(self, client: httpx.AsyncClient, team: Team) -> None:
        response = await client.post("/v1/sla-policies", json=POLICY, headers=team.agent_headers)
        assert response.status_code == 403

    async def test_agents_see_only_their_inboxes_of_a_policy(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        policy = await create_policy(
            client, team.admin_headers, inbox_ids=[team.inbox_a, team.inbox_b]
        )
        url = f"/v1/sla-policies/{policy['id']}"
        assert (await client.get(url, headers=team.agent_headers)).json()["inbox_ids"] == [
            team.inbox_a
        ]
        listed = await client.get("/v1/sla-policies", headers=team.outsider_headers)
        assert listed.json()["items"][0]["inbox_ids"] == [team.inbox_b]
        assert sorted((await client.get(url, headers=team.admin_headers)).json()["inbox_ids"]) == (
            sorted([team.inbox_a, team.inbox_b])
        )

    async def test_an_inbox_follows_one_policy(self, client: httpx.AsyncClient, team: Team) -> None:
        await create_policy(client, team.admin_headers, inbox_ids=[team.inbox_a])
        response = await client.post(
            "/v1/sla-policies",
            json={**POLICY, "inbox_ids": [team.inbox_a]},
            headers=team.admin_headers,
        )
        assert response.status_code == 409
        assert team.inbox_a in response.json()["detail"]

    async def test_deleting_a_policy_stops_its_clocks(
        self, client: httpx.AsyncClient, db: SessionMaker, team: Team
    ) -> None:
        policy = await create_policy(client, team.admin_headers, inbox_ids=[team.inbox_a])
        async with transaction(db) as session:
            _, cid = await receive(session, team.inbox_a, datetime(2026, 1, 5, 9, tzinfo=UTC))
        await client.delete(f"/v1/sla-policies/{policy['id']}", headers=team.admin_headers)
        conversation = await client.get(f"/v1/conversations/{cid}", headers=team.agent_headers)
        assert conversation.json()["sla"] is None


BAD: list[tuple[str, dict[str, Any], list[Any]]] = [
    (
        "negative target",
        {**POLICY, "targets": {"normal": {"first_response": -60}}},
        ["body", "targets", "normal", "first_response"],
    ),
    (
        "zero target",
        {**POLICY, "targets": {"high": {"resolution": 0}}},
        ["body", "targets", "high", "resolution"],
    ),
    ("negative warning", {**POLICY, "warn_before": -5}, ["body", "warn_before"]),
    (
        "warning not before due",
        {**POLICY, "warn_before": 3600},
        ["body", "warn_before"],
    ),
    (
        "warning share of 100 %",
        {**POLICY, "warn_before": None, "warn_before_percent": 100},
        ["body", "warn_before_percent"],
    ),
    (
        "both kinds of warning",
        {**POLICY, "warn_before_percent": 10},
        ["body", "warn_before"],
    ),
    ("unknown priority", {**POLICY, "targets": {"asap": {}}}, ["body", "targets", "asap", "[key]"]),
    (
        "unknown metric",
        {**POLICY, "targets": {"normal": {"reply": 60}}},
        ["body", "targets", "normal", "reply"],
    ),
    (
        "unknown time zone",
        with_hours(timezone="Mars/Olympus"),
        ["body", "business_hours", "timezone"],
    ),
    (
        "inverted interval",
        with_hours(intervals=[{"day": "mon", "start": "18:00", "end": "09:00"}]),
        ["body", "business_hours", "intervals", 0, "end"],
    ),
    (
        "overlapping intervals",
        with_hours(
            intervals=[
                {"day": "mon", "start": "09:00", "end": "13:00"},
                {"day": "tue", "start": "09:00", "end": "13:00"},
                {"day": "mon", "start": "12:00", "end": "18:00"},
            ]
        ),
        ["body", "business_hours", "intervals", 2],
    ),
    (
        "not a time",
        with_hours(intervals=[{"day": "mon", "start": "9am", "end": "18:00"}]),
        ["body", "business_hours", "intervals", 0, "start"],
    ),
    ("no intervals", with_hours(intervals=[]), ["body", "business_hours", "intervals"]),
    ("not a date", with_hours(holidays=["Christmas"]), ["body", "business_hours", "holidays", 0]),
    ("unknown inbox", {**POLICY, "inbox_ids": ["inb_nope"]}, ["body", "inbox_ids", 0]),
]


class TestBadPolicies:
    @pytest.mark.parametrize(
        ("body", "loc"), [(b, loc) for _, b, loc in BAD], ids=[n for n, _, _ in BAD]
    )
    async def test_422_names_the_field(
        self, client: httpx.AsyncClient, team: Team, body: dict[str, Any], loc: list[Any]
    ) -> None:
        response = await client.post("/v1/sla-policies", json=body, headers=team.admin_headers)
        assert response.status_code == 422, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert loc in [e["loc"] for e in response.json()["errors"]]
        listed = await client.get("/v1/sla-policies", headers=team.admin_headers)
        assert listed.json()["items"] == []  # nothing was stored

    async def test_patch_checks_the_whole_policy(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        policy = await create_policy(client, team.admin_headers)
        response = await client.patch(
            f"/v1/sla-policies/{policy['id']}",
            json={"targets": {"normal": {"first_response": 300}}},  # shorter than warn_before
            headers=team.admin_headers,
        )
        assert response.status_code == 422
        assert response.json()["errors"][0]["loc"] == ["body", "warn_before"]
        response = await client.patch(
            f"/v1/sla-policies/{policy['id']}", json={"name": None}, headers=team.admin_headers
        )
        assert response.status_code == 422
        assert response.json()["errors"][0]["loc"] == ["body", "name"]

    async def test_malformed_json_is_422(self, client: httpx.AsyncClient, team: Team) -> None:
        response = await client.post(
            "/v1/sla-policies",
            content=b"{not json",
            headers={**team.admin_headers, "Content-Type": "application/json"},
        )
        assert response.status_code == 422


class TestSimulate:
    async def test_friday_example_with_a_pause_matches_the_timers(
        self, client: httpx.AsyncClient, db: SessionMaker, team: Team, clock: FixedClock
    ) -> None:
        policy = await create_policy(
            client, team.admin_headers, inbox_ids=[team.inbox_a], business_hours=OFFICE
        )
        friday = datetime(2026, 1, 9, 17, 55, tzinfo=BERLIN)
        response = await client.post(
            f"/v1/sla-policies/{policy['id']}/simulate",
            json={"start_at": friday.isoformat(), "priority": "normal"},
            headers=team.agent_headers,
        )
        assert response.status_code == 200, response.text
        simulated = {m["metric"]: m for m in response.json()["metrics"]}
        first = simulated["first_response"]
        assert datetime.fromisoformat(first["due_at"]) == datetime(
            2026, 1, 12, 9, 55, tzinfo=BERLIN
        )
        assert datetime.fromisoformat(first["warn_at"]) == datetime(
            2026, 1, 12, 9, 45, tzinfo=BERLIN
        )
        # The same start through ingest gives the same due times: one code path.
        clock.set(friday)
        async with transaction(db) as session:
            _, cid = await receive(session, team.inbox_a, friday)
        shown = (await client.get(f"/v1/conversations/{cid}", headers=team.agent_headers)).json()
        for name in ("first_response", "resolution"):
            assert metric(shown, name)["due_at"] == simulated[name]["due_at"]
        # Pending Monday 10:00-13:00 (3 business hours) moves resolution by those hours.
        pauses = [
            {
                "start_at": datetime(2026, 1, 12, 10, 0, tzinfo=BERLIN).isoformat(),
                "end_at": datetime(2026, 1, 12, 13, 0, tzinfo=BERLIN).isoformat(),
            }
        ]
        paused = await client.post(
            f"/v1/sla-policies/{policy['id']}/simulate",
            json={"start_at": friday.isoformat(), "priority": "normal", "pauses": pauses},
            headers=team.agent_headers,
        )
        result = {m["metric"]: m for m in paused.json()["metrics"]}
        # 8 business hours from Fri 17:55: 5 min on Friday, then Mon 09:00 + 7:55 = 16:55;
        # paused 3 hours, it runs past Monday's 18:00 closing into Tuesday: 10:55.
        assert datetime.fromisoformat(simulated["resolution"]["due_at"]) == datetime(
            2026, 1, 12, 16, 55, tzinfo=BERLIN
        )
        assert datetime.fromisoformat(result["resolution"]["due_at"]) == datetime(
            2026, 1, 13, 10, 55, tzinfo=BERLIN
        )
        # The first response was due (09:55) before the pause began: the breach stands.
        assert result["first_response"]["due_at"] == first["due_at"]
        assert result["next_response"]["target_seconds"] == 1800

    async def test_simulate_changes_nothing_and_checks_its_input(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        policy = await create_policy(client, team.admin_headers)
        url = f"/v1/sla-policies/{policy['id']}/simulate"
        naive = await client.post(
            url, json={"start_at": "2026-01-05T09:00:00"}, headers=team.agent_headers
        )
        assert naive.status_code == 422
        assert naive.json()["errors"][0]["loc"] == ["body", "start_at"]
        backwards = await client.post(
            url,
            json={
                "start_at": "2026-01-05T09:00:00Z",
                "pauses": [{"start_at": "2026-01-05T10:00:00Z", "end_at": "2026-01-05T09:30:00Z"}],
            },
            headers=team.agent_headers,
        )
        assert backwards.status_code == 422
        assert backwards.json()["errors"][0]["loc"] == ["body", "pauses", 0]
        unknown = await client.post(
            "/v1/sla-policies/sla_nope/simulate",
            json={"start_at": "2026-01-05T09:00:00Z"},
            headers=team.agent_headers,
        )
        assert unknown.status_code == 404
        after = await client.get(f"/v1/sla-policies/{policy['id']}", headers=team.admin_headers)
        assert after.json()["version"] == 1
