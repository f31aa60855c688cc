"""Every error is RFC 9457 problem+json: validation, body size, routing, crashes, list params."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from inbox_service.core.db import SessionMaker, transaction
from inbox_service.core.idempotency import IdempotencyKey
from inbox_service.core.pagination import encode_cursor
from inbox_service.users.models import User
from tests.conftest import Team

PROBLEM_JSON = "application/problem+json"
MAX_BODY = 64 * 1024  # the `settings` fixture's max_body_bytes


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == PROBLEM_JSON
    problem: dict[str, Any] = response.json()
    assert problem["status"] == status
    assert problem["type"].startswith("https://")
    assert problem["title"]
    return problem


def locs(problem: dict[str, Any]) -> list[list[str | int]]:
    assert problem["errors"], problem
    assert all(set(error) == {"loc", "msg"} and error["msg"] for error in problem["errors"])
    return [error["loc"] for error in problem["errors"]]


async def count_users(db: SessionMaker) -> int:
    async with transaction(db) as s:
        return int(await s.scalar(select(func.count()).select_from(User)) or 0)


def padded_user(size: int, email: str = "big@example.com") -> bytes:
    """A valid user body, padded with trailing whitespace (still valid JSON) to `size` bytes."""
    raw = json.dumps({"email": email, "name": "Big"}).encode()
    return raw + b" " * (size - len(raw))


class TestRequestValidation:
    async def test_malformed_json_is_422(self, client: httpx.AsyncClient, team: Team) -> None:
        response = await client.post(
            "/v1/users",
            content=b'{"email": "a@example.com", "name": ',
            headers={**team.admin_headers, "Content-Type": "application/json"},
        )
        problem = assert_problem(response, 422)
        assert locs(problem)[0][0] == "body"

    async def test_wrong_type_names_the_field(self, client: httpx.AsyncClient, team: Team) -> None:
        body = {"email": "a@example.com", "name": "A", "capacity": "lots"}
        response = await client.post("/v1/users", json=body, headers=team.admin_headers)
        problem = assert_problem(response, 422)
        assert locs(problem) == [["body", "capacity"]]
        assert "capacity" in problem["detail"]

    async def test_unknown_field_is_422(
        self, client: httpx.AsyncClient, team: Team, db: SessionMaker
    ) -> None:
        before = await count_users(db)
        body = {"email": "a@example.com", "name": "A", "nickname": "ace"}
        response = await client.post("/v1/users", json=body, headers=team.admin_headers)
        problem = assert_problem(response, 422)
        assert locs(problem) == [["body", "nickname"]]
        assert await count_users(db) == before

    async def test_every_bad_field_is_listed(self, client: httpx.AsyncClient, team: Team) -> None:
        body = {"email": "not-an-address", "name": "A", "capacity": -1}
        response = await client.post("/v1/users", json=body, headers=team.admin_headers)
        assert sorted(locs(assert_problem(response, 422))) == [
            ["body", "capacity"],
            ["body", "email"],
        ]


class TestBodyLimit:
    async def test_body_at_the_limit_is_accepted(
        self, client: httpx.AsyncClient, team: Team, db: SessionMaker
    ) -> None:
        before = await count_users(db)
        response = await client.post(
            "/v1/users",
            content=padded_user(MAX_BODY),
            headers={**team.admin_headers, "Content-Type": "application/json"},
        )
        assert response.status_code == 201, response.text
        assert await count_users(db) == before + 1

    async def test_oversized_body_with_content_length_is_413(
        self, client: httpx.AsyncClient, team: Team, db: SessionMaker
    ) -> None:
        before = await count_users(db)
        response = await client.post(
            "/v1/users",
            content=padded_user(MAX_BODY + 1),
            headers={
                **team.admin_headers,
                "Content-Type": "application/json",
                "Idempotency-Key": "big",
            },
        )
        assert response.request.headers["Content-Length"] == str(MAX_BODY + 1)
        assert assert_problem(response, 413)["type"].endswith("/payload-too-large")
        assert await count_users(db) == before
        async with transaction(db) as s:
            assert await s.scalar(select(func.count()).select_from(IdempotencyKey)) == 0

    async def test_declared_oversized_length_is_413_before_reading(
        self, client: httpx.AsyncClient, team: Team, db: SessionMaker
    ) -> None:
        read: list[bytes] = []

        async def small_body() -> AsyncIterator[bytes]:
            chunk = padded_user(100)  # would be a valid request on its own
            read.append(chunk)
            yield chunk

        before = await count_users(db)
        response = await client.post(
            "/v1/users",
            content=small_body(),
            headers={
                **team.admin_headers,
                "Content-Type": "application/json",
                "Content-Length": str(MAX_BODY + 1),
            },
        )
        assert_problem(response, 413)
        assert read == []  # refused on the header alone
        assert await count_users(db) == before

    async def test_oversized_chunked_body_is_413(
        self, client: httpx.AsyncClient, team: Team, db: SessionMaker
    ) -> None:
        body = padded_user(MAX_BODY + 10)

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(body), 8192):
                yield body[start : start + 8192]

        before = await count_users(db)
        response = await client.post(
            "/v1/users",
            content=chunks(),
            headers={**team.admin_headers, "Content-Type": "application/json"},
        )
        assert "Content-Length" not in response.request.headers
        assert response.request.headers["Transfer-Encoding"] == "chunked"
        assert_problem(response, 413)
        assert await count_users(db) == before

    async def test_small_chunked_body_is_accepted(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        body = padded_user(20_000)

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(body), 4096):
                yield body[start : start + 4096]

        response = await client.post(
            "/v1/users",
            content=chunks(),
            headers={**team.admin_headers, "Content-Type": "application/json"},
        )
        assert response.status_code == 201, response.text


class TestRouting:
    async def test_unknown_route_is_404(self, client: httpx.AsyncClient, team: Team) -> None:
        response = await client.get("/v1/no-such-thing", headers=team.admin_headers)
        problem = assert_problem(response, 404)
        assert problem["title"] == "Not Found"

    @pytest.mark.parametrize(
        ("path", "allowed"),
        [
            ("/v1/users", {"GET", "POST"}),
            ("/v1/users/usr_1", {"GET", "PATCH", "DELETE"}),
            # A literal segment is its own resource, not an id of its sibling template.
            ("/v1/conversations/bulk", {"POST"}),
        ],
    )
    async def test_wrong_method_is_405_naming_every_allowed_method(
        self, client: httpx.AsyncClient, team: Team, path: str, allowed: set[str]
    ) -> None:
        response = await client.put(path, json={}, headers=team.admin_headers)
        assert_problem(response, 405)
        assert set(response.headers["Allow"].replace(" ", "").split(",")) == allowed


class TestUnstorableText:
    async def test_nul_in_an_id_or_a_field_is_422_not_500(
        self, client: httpx.AsyncClient, team: Team
    ) -> None:
        for path in ("/v1/conversations/cnv_%00", "/v1/users/usr_a%00b"):
            response = await client.get(path, headers=team.admin_headers)
            problem = assert_problem(response, 422)
            assert "NUL" in problem["detail"]
        response = await client.post(
            "/v1/tags", json={"name": "bad\u0000tag"}, headers=team.admin_headers
        )
        assert_problem(response, 422)
        listed = await client.get("/v1/tags", headers=team.admin_headers)
        assert all("bad" not in tag["name"] for tag in listed.json()["items"])


class TestUnhandledException:
    async def test_crash_is_500_without_details(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        async def boom() -> None:
            raise RuntimeError("password=hunter2 at db.internal:5432")

        app.add_api_route("/boom", boom)

        response = await client.get("/boom")

        problem = assert_problem(response, 500)
        assert set(problem) == {"type", "title", "status"}
        text = response.text
        for leak in ("hunter2", "RuntimeError", "Traceback", "db.internal", "boom"):
            assert leak not in text


class TestListParameters:
    @pytest.mark.parametrize(
        "cursor",
        [
            "not a cursor!",
            "%%%",
            base64.urlsafe_b64encode(b"{not json").decode(),
            base64.urlsafe_b64encode(b'{"id": "usr_1"}').decode(),  # not a list
            base64.urlsafe_b64encode(b'["usr_1", "usr_2"]').decode(),  # wrong arity
            base64.urlsafe_b64encode(b"\xff\xfe").decode(),  # not UTF-8
            "é",
            "x" * 513,
            encode_cursor(["usr_\x00"]),  # Postgres refuses NUL in text: was a 500
            encode_cursor(["usr_\ud800"]),  # a lone surrogate is not UTF-8: was a 500
        ],
    )
    async def test_bad_cursor_is_422(
        self, client: httpx.AsyncClient, team: Team, cursor: str
    ) -> None:
        response = await client.get(
            "/v1/users", params={"cursor": cursor}, headers=team.admin_headers
        )
        assert locs(assert_problem(response, 422)) == [["query", "cursor"]]

    @pytest.mark.parametrize("limit", ["0", "201", "-1", "ten"])
    async def test_limit_out_of_range_is_422(
        self, client: httpx.AsyncClient, team: Team, limit: str
    ) -> None:
        response = await client.get(
            "/v1/users", params={"limit": limit}, headers=team.admin_headers
        )
        assert locs(assert_problem(response, 422)) == [["query", "limit"]]

    @pytest.mark.parametrize("limit", ["1", "200"])
    async def test_limit_bounds_are_accepted(
        self, client: httpx.AsyncClient, team: Team, limit: str
    ) -> None:
        response = await client.get(
            "/v1/users", params={"limit": limit}, headers=team.admin_headers
        )
        assert response.status_code == 200
        assert len(response.json()["items"]) == min(int(limit), 3)
