"""Oversized bodies are refused before any route reads them: every operation that takes a
body answers 413 problem+json, with or without a Content-Length (chunked), or with one
that lies, and nothing is written. The limit is `max_body_bytes` (64 KiB in tests)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from inbox_service.core.config import Settings
from inbox_service.core.db import SessionMaker
from tests.conftest import Team
from tests.security.routes import Operation, operations, writes


def json_of_size(size: int) -> bytes:
    """Valid JSON (so only the size can be wrong) of exactly `size` bytes."""
    head, tail = b'{"body": "', b'"}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


def oversized(settings: Settings) -> bytes:
    return json_of_size(settings.max_body_bytes + 1)


async def chunks(data: bytes, size: int = 8192) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def body_operations(app: FastAPI) -> list[Operation]:
    found = [op for op in operations(app) if op.takes_body]
    assert len(found) >= 25  # guards the guard: the body-taking routes were found
    return found


async def test_the_write_counter_sees_what_a_request_writes(
    client: httpx.AsyncClient, db: SessionMaker, team: Team
) -> None:
    """Guards the guard: `writes` moves when a request writes."""
    before = await writes(db)
    made = await client.post("/v1/tags", json={"name": "counted"}, headers=team.admin_headers)
    assert made.status_code == 201, made.text
    assert await writes(db) != before


@pytest.mark.parametrize("framing", ["content-length", "chunked", "lying content-length"])
async def test_every_body_taking_operation_refuses_an_oversized_body(
    app: FastAPI,
    client: httpx.AsyncClient,
    db: SessionMaker,
    team: Team,
    settings: Settings,
    framing: str,
) -> None:
    data = oversized(settings)
    before = await writes(db)
    for op in body_operations(app):
        headers = {**team.admin_headers, "Content-Type": "application/json"}
        if framing == "content-length":
            content: bytes | AsyncIterator[bytes] = data
        elif framing == "chunked":
            content = chunks(data)  # httpx sends no Content-Length for a stream
        else:
            content = chunks(data)
            headers["Content-Length"] = "10"
        request = client.build_request(op.method, op.url(), content=content, headers=headers)
        if framing == "chunked":
            assert "content-length" not in request.headers
        response = await client.send(request)
        where = f"{framing}: {op}"
        assert response.status_code == 413, (where, response.text)
        assert response.headers["content-type"].startswith("application/problem+json"), where
        assert response.json()["status"] == 413, where
        assert response.headers["x-content-type-options"] == "nosniff", where
    assert await writes(db) == before


async def test_a_body_at_the_limit_is_read(
    client: httpx.AsyncClient, team: Team, settings: Settings
) -> None:
    """The limit is the limit: one byte less reaches the route (which judges the content)."""
    data = json_of_size(settings.max_body_bytes)
    response = await client.post(
        "/v1/tags",
        content=data,
        headers={**team.admin_headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text  # `body` is no field of a tag
    assert "body" in response.text
