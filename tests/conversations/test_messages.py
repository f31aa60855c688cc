"""Reading messages through the API: sanitized HTML, raw bytes, attachments, scoping."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import select

from inbox_service.conversations.models import Attachment, Message
from inbox_service.core.db import SessionMaker, transaction
from inbox_service.ingest.mime import parse_message
from inbox_service.ingest.store import InboxContext, Incoming, store_batch
from tests.conftest import Team

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)
HOSTILE_HTML = (
    '<p onclick="steal()">Hello <b>there</b></p>'
    "<script>alert('x')</script>"
    '<img src="x" onerror="alert(1)">'
    '<a href="javascript:alert(2)">click</a>'
    '<a href="https://example.com/ok">fine link</a>'
    '<iframe src="https://evil.example"></iframe>'
    "<style>body{background:url(https://tracker.example/p.gif)}</style>"
    '<img src="cid:logo@x">'
    '<img src="https://tracker.example/pixel.gif">'
)


def mime_with_html_and_attachments() -> bytes:
    boundary, related = "b0undary", "r3lated"
    png = base64.encodebytes(PNG).decode()
    return (
        "From: Ana <ana@customer.test>\r\nTo: support@example.com\r\n"
        "Subject: Broken invoice\r\nMessage-ID: <html1@customer.test>\r\n"
        "Date: Mon, 02 Mar 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
        f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n'
        f'--{boundary}\r\nContent-Type: multipart/related; boundary="{related}"\r\n\r\n'
        f"--{related}\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{HOSTILE_HTML}\r\n"
        f"--{related}\r\nContent-Type: image/png\r\nContent-ID: <logo@x>\r\n"
        f"Content-Transfer-Encoding: base64\r\nContent-Disposition: inline\r\n\r\n{png}\r\n"
        f"--{related}--\r\n"
        f'--{boundary}\r\nContent-Type: text/html; name="invoice.html"\r\n'
        'Content-Disposition: attachment; filename="invoice.html"\r\n\r\n'
        "<script>document.cookie</script>\r\n"
        f"--{boundary}--\r\n"
    ).encode()


@pytest.fixture
async def stored(db: SessionMaker, team: Team) -> Message:
    raw = mime_with_html_and_attachments()
    async with transaction(db) as session:
        context = InboxContext(inbox_id=team.inbox_a, team_addresses=frozenset())
        await store_batch(
            session,
            context,
            [Incoming(raw=raw, parsed=parse_message(raw))],
            now=datetime(2026, 3, 2, 12, tzinfo=UTC),
        )
        return await session.scalar(select(Message).where(Message.inbox_id == team.inbox_a))  # type: ignore[return-value]


class TestGetMessage:
    async def test_html_is_sanitized_and_inline_images_point_at_attachments(
        self, client: httpx.AsyncClient, team: Team, stored: Message
    ) -> None:
        response = await client.get(f"/v1/messages/{stored.id}", headers=team.agent_headers)
        assert response.status_code == 200, response.text
        body = response.json()
        html = body["html"]
        for bad in (
            "<script",
            "onerror",
            "onclick",
            "javascript:",
            "<iframe",
            "<style",
            "tracker.example",
            "alert(",
        ):
            assert bad not in html, bad
        assert "<b>there</b>" in html
        assert 'href="https://example.com/ok"' in html
        inline = next(a for a in body["attachments"] if a["content_id"] == "logo@x")
        assert f'src="/v1/attachments/{inline["id"]}"' in html
        assert body["from"] == {"name": "Ana", "address": "ana@customer.test"}
        assert body["threaded_by"] == "new"
        assert body["message_id"] == "html1@customer.test"

    async def test_other_inboxes_messages_are_404(
        self, client: httpx.AsyncClient, team: Team, stored: Message
    ) -> None:
        for path in (f"/v1/messages/{stored.id}", f"/v1/messages/{stored.id}/raw"):
            response = await client.get(path, headers=team.outsider_headers)
            assert response.status_code == 404
            assert "Broken invoice" not in response.text
        assert (
            await client.get("/v1/messages/msg_nope", headers=team.admin_headers)
        ).status_code == 404


class TestGetMessageRaw:
    async def test_raw_is_the_received_bytes(
        self, client: httpx.AsyncClient, team: Team, stored: Message
    ) -> None:
        response = await client.get(f"/v1/messages/{stored.id}/raw", headers=team.agent_headers)
        assert response.status_code == 200
        assert response.content == mime_with_html_and_attachments()
        assert response.headers["content-type"] == "message/rfc822"
        assert response.headers["x-content-type-options"] == "nosniff"


class TestGetAttachment:
    async def test_downloads_are_attachments_with_their_type_and_nosniff(
        self, client: httpx.AsyncClient, team: Team, stored: Message, db: SessionMaker
    ) -> None:
        async with transaction(db) as session:
            attachments = {
                a.filename or a.content_id: a
                for a in await session.scalars(
                    select(Attachment).where(Attachment.message_id == stored.id)
                )
            }
        png = attachments["logo@x"]
        response = await client.get(f"/v1/attachments/{png.id}", headers=team.agent_headers)
        assert response.status_code == 200
        assert response.content == PNG
        assert response.headers["content-type"] == "image/png"
        assert response.headers["content-disposition"].startswith("attachment;")
        assert response.headers["x-content-type-options"] == "nosniff"
        hostile = attachments["invoice.html"]
        response = await client.get(f"/v1/attachments/{hostile.id}", headers=team.agent_headers)
        assert response.headers["content-disposition"].startswith("attachment;")
        assert "sandbox" in response.headers["content-security-policy"]
        outsider = await client.get(f"/v1/attachments/{png.id}", headers=team.outsider_headers)
        assert outsider.status_code == 404
