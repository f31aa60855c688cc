"""Rating links: recorded once per resolution cycle; anything else is a clear 4xx and
leaves nothing behind."""

from __future__ import annotations

import base64
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from inbox_service.core.clock import FixedClock
from inbox_service.core.db import SessionMaker, transaction
from inbox_service.core.events import Event
from inbox_service.csat.models import CsatRating
from inbox_service.csat.tokens import LinkClaims, derive_keys, sign
from tests.conftest import Team
from tests.csat.conftest import KEY, Rated, link
from tests.reports.support import at


async def counts(db: SessionMaker) -> tuple[int, int]:
    """(ratings, csat.received events)."""
    async with transaction(db) as session:
        ratings = await session.scalar(select(func.count()).select_from(CsatRating))
        events = await session.scalar(
            select(func.count()).select_from(Event).where(Event.type == "csat.received")
        )
    return int(ratings or 0), int(events or 0)


async def rate(client: httpx.AsyncClient, token: str, body: Any) -> httpx.Response:
    return await client.post(f"/v1/csat/{token}", json=body)  # no API key: the link is it


async def test_a_valid_link_records_once_with_event_and_timeline_entry(
    client: httpx.AsyncClient, team: Team, rated: Rated, db: SessionMaker
) -> None:
    token = await link(client, team, rated)
    response = await rate(client, token, {"score": 4, "comment": "Quick and kind"})
    assert response.status_code == 201, response.text
    assert response.json()["score"] == 4
    assert response.json()["cycle"] == 0
    assert await counts(db) == (1, 1)

    again = await rate(client, token, {"score": 1})
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"
    assert await counts(db) == (1, 1)

    listed = await client.get(
        f"/v1/conversations/{rated.conversation_id}/csat", headers=team.agent_headers
    )
    assert [(r["score"], r["comment"]) for r in listed.json()["items"]] == [(4, "Quick and kind")]
    hidden = await client.get(
        f"/v1/conversations/{rated.conversation_id}/csat", headers=team.outsider_headers
    )
    assert hidden.status_code == 404
    async with transaction(db) as session:
        event = await session.scalar(select(Event).where(Event.type == "csat.received"))
    assert event is not None
    assert event.conversation_id == rated.conversation_id
    assert event.data["csat"] == {"score": 4, "comment": "Quick and kind", "cycle": 0}


def _flip(text: str, index: int) -> str:
    return text[:index] + ("A" if text[index] != "A" else "B") + text[index + 1 :]


@pytest.mark.parametrize("where", ["payload", "mac", "other_key", "other_conversation", "junk"])
async def test_tampered_links_are_404_and_record_nothing(
    client: httpx.AsyncClient, team: Team, rated: Rated, db: SessionMaker, where: str
) -> None:
    token = await link(client, team, rated)
    payload, _, mac = token.partition(".")
    forged = {
        "payload": _flip(payload, 3) + "." + mac,
        "mac": payload + "." + _flip(mac, 2),
        "other_key": sign(
            derive_keys("another-secret"),
            LinkClaims(rated.conversation_id, 0, at(5, 9) + timedelta(days=1)),
        ),
        # the payload rewritten to point elsewhere, the old signature kept
        "other_conversation": base64.urlsafe_b64encode(b"cnv_other:0:9999999999")
        .rstrip(b"=")
        .decode()
        + "."
        + mac,
        "junk": "not-a-token",
    }[where]
    response = await rate(client, forged, {"score": 5})
    assert response.status_code == 404, response.text
    assert response.json()["detail"] == "this rating link is not valid"
    assert await counts(db) == (0, 0)


async def test_an_expired_link_is_410_and_records_nothing(
    client: httpx.AsyncClient, team: Team, rated: Rated, db: SessionMaker, clock: FixedClock
) -> None:
    token = await link(client, team, rated)
    clock.advance(days=7, seconds=1)  # CSAT_LINK_DAYS=7
    response = await rate(client, token, {"score": 5})
    assert response.status_code == 410
    assert response.json()["type"].endswith("csat-link-expired")
    assert await counts(db) == (0, 0)


@pytest.mark.parametrize(
    "body", [{"score": 0}, {"score": 6}, {"score": "five"}, {}, {"score": 3, "extra": 1}]
)
async def test_a_bad_score_is_422_and_does_not_use_up_the_link(
    client: httpx.AsyncClient, team: Team, rated: Rated, db: SessionMaker, body: Any
) -> None:
    token = await link(client, team, rated)
    response = await rate(client, token, body)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert await counts(db) == (0, 0)
    assert (await rate(client, token, {"score": 3})).status_code == 201


async def test_each_resolution_cycle_is_rated_once_and_reports_count_them(
    client: httpx.AsyncClient, team: Team, rated: Rated, db: SessionMaker
) -> None:
    first = await link(client, team, rated)
    await rated.play.set_status(rated.conversation_id, "resolved", at(5, 10))
    assert (await rate(client, first, {"score": 2})).status_code == 201
    # the customer writes back: reopened, a new cycle and a new link
    await rated.play.customer_writes(team.inbox_a, at(5, 11), reply_to=rated.conversation_id)
    second = await link(client, team, rated)
    assert second != first
    assert (await rate(client, first, {"score": 5})).status_code == 409  # cycle 0 is rated
    response = await rate(client, second, {"score": 5})
    assert response.status_code == 201
    assert response.json()["cycle"] == 1
    assert (await rate(client, second, {"score": 5})).status_code == 409
    assert await counts(db) == (2, 2)

    report = await client.get(
        "/v1/reports/summary",
        params={"from": "2026-01-05T00:00:00Z", "to": "2026-01-06T00:00:00Z"},
        headers=team.agent_headers,
    )
    assert report.json()["totals"]["csat"] == {
        "average": 3.5,
        "responses": 2,
        "distribution": {"1": 0, "2": 1, "3": 0, "4": 0, "5": 1},
    }


async def test_the_template_variable_is_listed(client: httpx.AsyncClient, team: Team) -> None:
    response = await client.get("/v1/template-variables", headers=team.agent_headers)
    assert "csat.url" in [v["name"] for v in response.json()["items"]]


def test_key_rotation_verifies_old_links() -> None:
    from inbox_service.csat.tokens import verify

    claims = LinkClaims("cnv_1", 2, at(5, 9))
    token = sign(derive_keys("old"), claims)
    assert verify(derive_keys(f"new,{KEY},old"), token) == claims
