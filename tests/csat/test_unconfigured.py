"""Without INBOX_SECRET_KEY (or CSAT_PAGE_URL) there are no rating links."""

from __future__ import annotations

import httpx
import pytest

from inbox_service.app import create_app
from inbox_service.core.clock import FixedClock
from inbox_service.core.config import Settings
from inbox_service.core.db import SessionMaker
from inbox_service.csat.tokens import LinkClaims, derive_keys, sign
from tests.conftest import Team
from tests.csat.conftest import KEY, Rated
from tests.reports.support import at


@pytest.mark.parametrize("missing", ["inbox_secret_key", "csat_page_url"])
async def test_unconfigured_means_no_link_and_no_ratings(
    db: SessionMaker, clock: FixedClock, team: Team, rated: Rated, missing: str
) -> None:
    values = {"inbox_secret_key": KEY, "csat_page_url": "https://help.example.com/rate"}
    values[missing] = None  # type: ignore[assignment]
    app = create_app(
        Settings(database_url="postgresql+asyncpg://unused/unused", **values),  # type: ignore[arg-type]
        sessionmaker=db,
        clock=clock,
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.post(
            f"/v1/templates/{rated.template_id}/render",
            json={"conversation_id": rated.conversation_id},
            headers=team.agent_headers,
        )
        assert response.json()["body"] == "Solved? Rate us: "
        assert response.json()["empty_variables"] == ["csat.url"]
        if missing == "inbox_secret_key":
            token = sign(derive_keys(KEY), LinkClaims(rated.conversation_id, 0, at(9, 9)))
            rated_response = await client.post(f"/v1/csat/{token}", json={"score": 5})
            assert rated_response.status_code == 404
            assert "not enabled" in rated_response.json()["detail"]
