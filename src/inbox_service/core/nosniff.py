"""`X-Content-Type-Options: nosniff` on every answer.

JSON answers carry text that customers and agents wrote (names, subjects, notes, …) as
given, HTML included; a browser must never sniff such an answer into a page. Downloads
set the header themselves; this adds it where a route did not."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_HEADER = b"x-content-type-options"


class NoSniffMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(bytes(k).lower() == _HEADER for k, _ in headers):
                    headers.append((_HEADER, b"nosniff"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_header)
