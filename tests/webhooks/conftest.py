"""Fixtures for the webhook tests: a loopback receiver, the sender's client, a connection log."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from inbox_service.webhooks import sender
from tests.webhooks.receiver import Receiver


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A plain-HTTP receiver on 127.0.0.1."""
    server = Receiver()
    await server.start()
    yield server
    await server.close()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with sender.new_client() as http:
        yield http


@pytest.fixture
async def connect_log(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    """Every outgoing connection attempted while the test runs; each one fails at once.

    Covers blocking sockets and the asyncio loop (httpx reaches it through anyio), so an
    empty log proves no packet left for the target.
    """
    log: list[tuple[str, Any]] = []

    def sync_recorder(name: str) -> Any:
        def record(self: object, address: Any, *args: Any, **kwargs: Any) -> Any:
            log.append((name, address))
            raise OSError(f"test: {name}({address!r}) is not allowed")

        return record

    def async_recorder(name: str) -> Any:
        async def record(self: object, *args: Any, **kwargs: Any) -> Any:
            log.append((name, args))
            raise OSError(f"test: {name}{args!r} is not allowed")

        return record

    monkeypatch.setattr(socket.socket, "connect", sync_recorder("connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", sync_recorder("connect_ex"))
    loop_type = type(asyncio.get_running_loop())
    for name in ("sock_connect", "create_connection", "getaddrinfo"):
        monkeypatch.setattr(loop_type, name, async_recorder(name))
    return log
