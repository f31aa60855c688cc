"""The summary's figures, against a scenario whose every number is worked out by hand.

Inbox A, calendar first response times: c1 600 s, c2 1800 s, c3 7200 s, c4 10800 s (c5
unanswered). Resolved: c1 after 3600 s, c2 after 10800 s, c3 after 25200 s (creation to
its latest resolution). percentile_cont interpolates: over 4 values the median is the
mean of the middle two, p90 sits at 0.9 x 3 = 2.7 between the 3rd and 4th.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import Team
from tests.reports.conftest import Scenario
from tests.reports.support import at

PERIOD = {"from": "2026-01-05T00:00:00Z", "to": "2026-01-07T00:00:00Z"}


async def summary(
    client: httpx.AsyncClient, headers: dict[str, str], **params: str
) -> dict[str, Any]:
    response = await client.get("/v1/reports/summary", params={**PERIOD, **params}, headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def by_key(body: dict[str, Any]) -> dict[str | None, dict[str, Any]]:
    return {group["key"]: group for group in body["groups"]}


async def test_inbox_figures_are_exactly_the_hand_computed_ones(
    client: httpx.AsyncClient, team: Team, scenario: Scenario
) -> None:
    body = await summary(client, team.admin_headers, inbox_id=team.inbox_a)
    totals = body["totals"]
    assert totals["volume"] == {"new": 5, "resolved": 3, "reopened": 1}
    first = totals["first_response"]
    assert first["count"] == 4
    assert first["median_seconds"] == pytest.approx(4500)  # (1800 + 7200) / 2
    assert first["p90_seconds"] == pytest.approx(9720)  # 7200 + 0.7 x 3600
    # 24/7 policy: the business clock agrees with the calendar
    assert first["business_median_seconds"] == pytest.approx(4500)
    assert first["business_p90_seconds"] == pytest.approx(9720)
    resolution = totals["resolution"]
    assert resolution["time"]["median_seconds"] == pytest.approx(10800)
    assert resolution["time"]["p90_seconds"] == pytest.approx(22320)  # 10800 + 0.8 x 14400
    assert resolution["first_contact_count"] == 1  # c1 only: c2 had 2 replies, c3 reopened
    assert resolution["first_contact_rate"] == pytest.approx(1 / 3)
    assert resolution["replies_to_resolution"] == pytest.approx(5 / 3)  # (1 + 2 + 2) / 3
    sla = totals["sla"]
    # first response: c1, c2 in time; c3, c4 answered late; c5 overdue and unanswered
    assert sla["first_response"] == {"met": 2, "breached": 3, "compliance": 0.4}
    # resolution: c1, c2, c3 within 8 h (c3's second cycle too); c4, c5 overdue
    assert sla["resolution"] == {"met": 3, "breached": 2, "compliance": 0.6}
    assert sla["next_response"] == {"met": 0, "breached": 0, "compliance": None}
    assert totals["csat"] == {
        "average": None,
        "responses": 0,
        "distribution": {"1": 0, "2": 0, "3": 0, "4": 0, "5": 0},
    }


async def test_agent_grouping_matches_hand_computed_values(
    client: httpx.AsyncClient, team: Team, scenario: Scenario
) -> None:
    groups = by_key(
        await summary(client, team.admin_headers, inbox_id=team.inbox_a, group_by="agent")
    )
    assert set(groups) == {team.agent_id, team.admin_id, None}
    agent = groups[team.agent_id]  # c1, c3
    assert agent["volume"] == {"new": 2, "resolved": 2, "reopened": 1}
    assert agent["first_response"]["median_seconds"] == pytest.approx(3900)
    assert agent["first_response"]["p90_seconds"] == pytest.approx(6540)  # 600 + 0.9 x 6600
    assert agent["resolution"]["first_contact_rate"] == pytest.approx(0.5)
    assert agent["resolution"]["replies_to_resolution"] == pytest.approx(1.5)
    assert agent["sla"]["first_response"]["compliance"] == pytest.approx(0.5)
    admin = groups[team.admin_id]  # c2, c4
    assert admin["volume"] == {"new": 2, "resolved": 1, "reopened": 0}
    assert admin["first_response"]["median_seconds"] == pytest.approx(6300)
    assert admin["resolution"]["first_contact_rate"] == 0
    assert admin["resolution"]["replies_to_resolution"] == pytest.approx(2)
    unassigned = groups[None]  # c5
    assert unassigned["volume"]["new"] == 1
    assert unassigned["first_response"]["median_seconds"] is None


async def test_day_grouping_cuts_days_in_the_inbox_time_zone(
    client: httpx.AsyncClient, team: Team, scenario: Scenario
) -> None:
    groups = by_key(
        await summary(client, team.admin_headers, inbox_id=team.inbox_a, group_by="day")
    )
    # c3 came at 03:00 UTC on the 6th: 22:00 on the 5th in New York
    assert list(groups) == ["2026-01-05", "2026-01-06"]
    fifth, sixth = groups["2026-01-05"], groups["2026-01-06"]
    assert fifth["volume"] == {"new": 3, "resolved": 3, "reopened": 1}
    assert fifth["first_response"]["median_seconds"] == pytest.approx(1800)
    assert fifth["first_response"]["p90_seconds"] == pytest.approx(6120)  # 1800 + 0.8 x 5400
    assert fifth["resolution"]["time"]["median_seconds"] == pytest.approx(10800)
    assert sixth["volume"] == {"new": 2, "resolved": 0, "reopened": 0}
    assert sixth["first_response"]["median_seconds"] == pytest.approx(10800)
    assert sixth["resolution"]["first_contact_rate"] is None


async def test_an_agent_reports_only_on_their_inboxes(
    client: httpx.AsyncClient, team: Team, scenario: Scenario
) -> None:
    admin = await summary(client, team.admin_headers, group_by="inbox")
    assert admin["totals"]["volume"]["new"] == 6
    assert set(by_key(admin)) == {team.inbox_a, team.inbox_b}

    agent = await summary(client, team.agent_headers, group_by="inbox")
    assert agent["totals"]["volume"]["new"] == 5  # b1 is not theirs
    assert set(by_key(agent)) == {team.inbox_a}
    outsider = await summary(client, team.outsider_headers)
    assert outsider["totals"]["volume"] == {"new": 1, "resolved": 1, "reopened": 0}

    response = await client.get(
        "/v1/reports/summary",
        params={**PERIOD, "inbox_id": team.inbox_b},
        headers=team.agent_headers,
    )
    assert response.status_code == 404
    response = await client.get(
        "/v1/reports/export",
        params={**PERIOD, "inbox_id": team.inbox_b},
        headers=team.agent_headers,
    )
    assert response.status_code == 404
    export = await client.get("/v1/reports/export", params=PERIOD, headers=team.agent_headers)
    assert scenario.ids["b1"] not in export.text
    assert scenario.ids["c1"] in export.text


async def test_the_period_bounds_the_cohort(
    client: httpx.AsyncClient, team: Team, scenario: Scenario
) -> None:
    body = await summary(
        client,
        team.admin_headers,
        inbox_id=team.inbox_a,
        **{"from": "2026-01-06T00:00:00Z", "to": "2026-01-06T10:00:00Z"},
    )
    assert body["totals"]["volume"] == {"new": 1, "resolved": 1, "reopened": 1}  # c3
    assert body["from"] == "2026-01-06T00:00:00Z"
    assert body["to"] == "2026-01-06T10:00:00Z"
    assert body["groups"] is None


async def test_every_way_out_of_resolved_is_a_reopening_and_resolving_stamps_the_time(
    client: httpx.AsyncClient, team: Team, scenario: Scenario
) -> None:
    play, c1 = scenario.play, scenario.ids["c1"]
    await play.set_status(c1, "pending", at(7, 9))  # a person reopens it (to pending)
    await play.set_status(c1, "resolved", at(7, 10))
    body = await summary(client, team.admin_headers, inbox_id=team.inbox_a)
    resolution = body["totals"]["resolution"]
    assert body["totals"]["volume"] == {"new": 5, "resolved": 3, "reopened": 2}
    assert resolution["first_contact_count"] == 0  # c1 was reopened: no longer FCR
    # c1 now took from Jan 5 14:00 to Jan 7 10:00 (158400 s): 10800, 25200, 158400
    assert resolution["time"]["median_seconds"] == pytest.approx(25200)


@pytest.mark.parametrize(
    ("params", "loc"),
    [
        ({"from": "2026-01-05T00:00:00", "to": "2026-01-06T00:00:00Z"}, "from"),
        ({"from": "2026-01-06T00:00:00Z", "to": "2026-01-05T00:00:00Z"}, "from"),
        ({"from": "2025-01-01T00:00:00Z", "to": "2026-06-01T00:00:00Z"}, "from"),
        ({"group_by": "weekday"}, "group_by"),
        ({"from": "yesterday"}, "from"),
    ],
)
async def test_bad_parameters_are_clear_422s(
    client: httpx.AsyncClient, team: Team, params: dict[str, str], loc: str
) -> None:
    response = await client.get("/v1/reports/summary", params=params, headers=team.admin_headers)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert loc in str(response.json()["errors"])


async def test_reports_need_a_key(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/reports/summary")
    assert response.status_code == 401
