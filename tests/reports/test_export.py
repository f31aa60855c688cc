"""The CSV behind the summary: one row per conversation of the cohort, streamed."""

from __future__ import annotations

import csv
import io

import httpx

from tests.conftest import Team
from tests.reports.conftest import Scenario
from tests.reports.test_summary import PERIOD


async def test_export_streams_one_row_per_conversation_with_its_figures(
    client: httpx.AsyncClient, team: Team, scenario: Scenario
) -> None:
    async with client.stream(
        "GET",
        "/v1/reports/export",
        params={**PERIOD, "inbox_id": team.inbox_a},
        headers=team.admin_headers,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/csv")
        assert "attachment" in response.headers["content-disposition"]
        text = "".join([chunk async for chunk in response.aiter_text()])
    rows = list(csv.DictReader(io.StringIO(text)))
    ids = scenario.ids
    assert [row["id"] for row in rows] == [ids[k] for k in ("c1", "c2", "c3", "c4", "c5")]
    c1, c3, c5 = rows[0], rows[2], rows[4]
    assert c1["frt_seconds"] == "600"
    assert c1["resolution_seconds"] == "3600"
    assert c1["fcr"] == "true"
    assert c1["reply_count"] == "1"
    assert c1["reopens"] == "0"
    assert c1["sla_first_response"] == "met"
    assert c1["assignee_id"] == team.agent_id
    assert c3["day"] == "2026-01-05"  # New York time
    assert c3["reopens"] == "1"
    assert c3["fcr"] == "false"
    assert c3["resolution_seconds"] == "25200"
    assert c3["sla_first_response"] == "breached"
    assert c5["frt_seconds"] == ""
    assert c5["status"] == "open"
    assert c5["resolved_at"] == ""


async def test_an_empty_period_is_just_the_header(client: httpx.AsyncClient, team: Team) -> None:
    response = await client.get("/v1/reports/export", params=PERIOD, headers=team.admin_headers)
    assert response.status_code == 200
    assert response.text.splitlines() == [
        "id,inbox_id,assignee_id,status,created_at,day,first_response_at,frt_seconds,"
        "frt_business_seconds,resolved_at,resolution_seconds,reply_count,reopens,fcr,"
        "sla_first_response,sla_next_response,sla_resolution,csat_last"
    ]
