"""Refuse request bodies larger than `max_body_bytes` before any route reads them."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inbox_service.core.asgi import header, replay_body, send_bytes
from inbox_service.core.errors import PROBLEM_JSON, TYPE_BASE


class BodyLimitMiddleware:
    """Buffers the body (bounded) so a too-large one is a 413 and nothing downstream runs."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(send)
            return
        body = bytearray()
        while True:
            message: Message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await self._too_large(send)
                return
            if not message.get("more_body", False):
                break
        await self.app(scope, replay_body(bytes(body)), send)

    async def _too_large(self, send: Send) -> None:
        problem = {
            "type": TYPE_BASE + "payload-too-large",
            "title": "Request body too large",
            "status": 413,
            "detail": f"the body is larger than {self.max_bytes} bytes",
        }
        await send_bytes(send, 413, json.dumps(problem).encode(), [("content-type", PROBLEM_JSON)])
