from __future__ import annotations

from dataclasses import dataclass

import httpx
import pytest

from inbox_service.core.clock import FixedClock
from inbox_service.core.config import Settings
from inbox_service.core.crypto import generate_key
from inbox_service.core.db import SessionMaker
from inbox_service.replies.sender import ReplySender
from tests.conftest import Team
from tests.reports.support import Play, at

KEY = generate_key()
PAGE = "https://help.example.com/rate"


@pytest.fixture
def settings() -> Settings:
    return Settings(
        database_url="postgresql+asyncpg://unused/unused",
        rate_limit_per_minute=0,
        max_body_bytes=64 * 1024,
        inbox_secret_key=KEY,
        csat_page_url=PAGE,
        csat_link_days=7,
    )


@dataclass
class Rated:
    play: Play
    conversation_id: str
    template_id: str


@pytest.fixture
async def rated(
    db: SessionMaker, client: httpx.AsyncClient, clock: FixedClock, team: Team
) -> Rated:
    """A conversation in inbox A and a template that carries the rating link."""
    play = Play(db, client, clock, team, ReplySender(db, clock, None, worker_id="csat"))
    conversation_id = await play.customer_writes(team.inbox_a, at(5, 9))
    response = await client.post(
        "/v1/templates",
        json={"name": "Closing", "body": "Solved? Rate us: {{ csat.url }}"},
        headers=team.admin_headers,
    )
    assert response.status_code == 201, response.text
    return Rated(play, conversation_id, response.json()["id"])


async def link(client: httpx.AsyncClient, team: Team, rated: Rated) -> str:
    """The token of the link `{{ csat.url }}` renders to now."""
    response = await client.post(
        f"/v1/templates/{rated.template_id}/render",
        json={"conversation_id": rated.conversation_id},
        headers=team.agent_headers,
    )
    assert response.status_code == 200, response.text
    url = response.json()["body"].removeprefix("Solved? Rate us: ")
    assert url.startswith(PAGE + "?token=")
    return url.removeprefix(PAGE + "?token=")
