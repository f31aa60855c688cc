"""Small ASGI helpers shared by the middlewares."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from starlette.types import Message, Receive, Scope, Send


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def replay_body(body: bytes) -> Receive:
    """A `receive` that hands the app an already-read body, then waits for disconnect."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive


async def send_bytes(
    send: Send, status: int, body: bytes, headers: Iterable[tuple[str, str]]
) -> None:
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    raw.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


@dataclass
class CapturedResponse:
    """What the app sent, kept so it can be stored (idempotency replays)."""

    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    streaming: bool = False
