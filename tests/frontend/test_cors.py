"""CORS on /v1/*: the listed origins only, preflight included; `*` refused at start-up."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from pydantic import ValidationError

from inbox_service.app import create_app
from inbox_service.core.clock import FixedClock
from inbox_service.core.config import Settings
from inbox_service.core.db import SessionMaker
from tests.conftest import Team

ALLOWED = "https://app.example.com"
OTHER = "https://evil.example.net"
REQUEST_HEADERS = ["Authorization", "Content-Type", "If-Match", "Idempotency-Key", "Last-Event-ID"]
EXPOSED = ["ETag", "Location", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"]


@pytest.fixture
async def cors_client(
    settings: Settings, db: SessionMaker, clock: FixedClock
) -> AsyncIterator[httpx.AsyncClient]:
    configured = settings.model_copy(
        update={
            "cors_allow_origins": [ALLOWED, "http://127.0.0.1:5173"],
            "rate_limit_per_minute": 2,
        }
    )
    app = create_app(configured, sessionmaker=db, clock=clock)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


def preflight(origin: str, method: str = "PATCH") -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": ", ".join(h.lower() for h in REQUEST_HEADERS),
    }


def cors_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.startswith("access-control-")}


def names(value: str) -> set[str]:
    return {part.strip().lower() for part in value.split(",")}


class TestPreflight:
    async def test_an_allowed_origin_gets_the_methods_and_headers(
        self, cors_client: httpx.AsyncClient
    ) -> None:
        response = await cors_client.options("/v1/conversations/cnv_1", headers=preflight(ALLOWED))
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == ALLOWED
        assert names(response.headers["access-control-allow-headers"]) >= names(
            ",".join(REQUEST_HEADERS)
        )
        assert names(response.headers["access-control-allow-methods"]) >= {
            "get",
            "post",
            "put",
            "patch",
            "delete",
        }
        assert "access-control-allow-credentials" not in response.headers
        assert "origin" in names(response.headers["vary"])

    async def test_another_origin_gets_no_cors_header_at_all(
        self, cors_client: httpx.AsyncClient
    ) -> None:
        response = await cors_client.options("/v1/conversations/cnv_1", headers=preflight(OTHER))
        assert cors_headers(response) == {}
        assert response.headers["content-type"].startswith("application/problem+json")

    async def test_an_unlisted_request_header_is_refused(
        self, cors_client: httpx.AsyncClient
    ) -> None:
        headers = {**preflight(ALLOWED), "Access-Control-Request-Headers": "x-secret"}
        response = await cors_client.options("/v1/me", headers=headers)
        assert response.status_code == 400


class TestActualRequests:
    async def test_an_allowed_origin_can_read_the_answer_and_its_headers(
        self, cors_client: httpx.AsyncClient, team: Team
    ) -> None:
        response = await cors_client.get(
            "/v1/me", headers={**team.agent_headers, "Origin": ALLOWED}
        )
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == ALLOWED
        assert names(response.headers["access-control-expose-headers"]) == names(
            ",".join([*EXPOSED, "Retry-After"])
        )

    async def test_errors_and_rate_limits_carry_cors_headers_too(
        self, cors_client: httpx.AsyncClient, team: Team
    ) -> None:
        statuses = []
        for _ in range(3):
            response = await cors_client.get("/v1/me", headers={"Origin": ALLOWED})
            statuses.append(response.status_code)
            assert response.headers["access-control-allow-origin"] == ALLOWED
        assert statuses == [401, 401, 429]

    async def test_another_origin_gets_no_cors_header(
        self, cors_client: httpx.AsyncClient, team: Team
    ) -> None:
        response = await cors_client.get("/v1/me", headers={**team.agent_headers, "Origin": OTHER})
        assert response.status_code == 200  # the browser, not the server, withholds it
        assert cors_headers(response) == {}

    async def test_only_v1_paths(self, cors_client: httpx.AsyncClient) -> None:
        response = await cors_client.get("/healthz", headers={"Origin": ALLOWED})
        assert cors_headers(response) == {}

    async def test_no_origins_configured_means_no_cors(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        response = await client.options("/v1/me", headers=preflight(ALLOWED, "GET"))
        assert cors_headers(response) == {}


class TestSetting:
    def test_comma_separated_origins(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("CORS_ALLOW_ORIGINS", " https://a.example.com, http://127.0.0.1:5173/ ")
        assert Settings().cors_allow_origins == ["https://a.example.com", "http://127.0.0.1:5173"]

    def test_none_by_default(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("CORS_ALLOW_ORIGINS", raising=False)
        assert Settings(_env_file=None).cors_allow_origins == []  # type: ignore[call-arg]

    @pytest.mark.parametrize(
        "value",
        [
            pytest.param("*", id="wildcard"),
            pytest.param("https://a.example.com,*", id="wildcard-among-others"),
            pytest.param("https://*.example.com", id="wildcard-host"),
            pytest.param("app.example.com", id="no-scheme"),
            pytest.param("https://app.example.com/path", id="a-url-not-an-origin"),
        ],
    )
    def test_refused_at_start_up(self, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
        monkeypatch.setenv("CORS_ALLOW_ORIGINS", value)
        with pytest.raises(ValidationError, match="cors_allow_origins"):
            Settings()
