from __future__ import annotations

import httpx

from tests.conftest import Team


async def test_me_returns_the_key_owner(client: httpx.AsyncClient, team: Team) -> None:
    response = await client.get("/v1/me", headers=team.agent_headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == team.agent_id
    assert body["inbox_ids"] == [team.inbox_a]
    assert response.headers["ETag"] == f'"{body["version"]}"'
