"""Prometheus metrics are labelled by route template, never by raw path."""

from __future__ import annotations

import httpx

from tests.conftest import Team


def _requests(metrics: str, route: str, status: str) -> float:
    labels = f'{{method="GET",route="{route}",status="{status}"}}'
    for line in metrics.splitlines():
        if line.startswith(f"inbox_http_requests_total{labels} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


class TestRequestMetrics:
    async def test_labelled_by_the_route_template(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        route = "/v1/conversations/{conversation_id}"
        before = _requests((await client.get("/metrics")).text, route, "404")

        missing = await client.get("/v1/conversations/cnv_missing", headers=team.admin_headers)

        assert missing.status_code == 404
        metrics = (await client.get("/metrics")).text
        assert _requests(metrics, route, "404") == before + 1
        assert "cnv_missing" not in metrics

    async def test_unknown_path_is_unmatched(self, client: httpx.AsyncClient, team: Team) -> None:
        before = _requests((await client.get("/metrics")).text, "unmatched", "404")

        await client.get("/v1/no-such-thing/123", headers=team.admin_headers)

        metrics = (await client.get("/metrics")).text
        assert _requests(metrics, "unmatched", "404") == before + 1
        assert "no-such-thing" not in metrics
