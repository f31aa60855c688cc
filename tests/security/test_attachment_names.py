"""Hostile attachment names and types come out safely on download.

The names arrive in real mail (RFC 2231 `filename*`, RFC 2047 words, plain quoted), are
stored through ingest, and are served by `GET /v1/attachments/{id}`: the Content-Disposition
is one printable-ASCII header line, always `attachment`, and both of its names are a bare
file name (no directories, no control or bidi-override characters, bounded length).
Active types (HTML, SVG, XHTML, XML, JavaScript) are served as application/octet-stream.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.message import Message as EmailMessage
from urllib.parse import unquote

import httpx
import pytest
from sqlalchemy import select

from inbox_service.conversations.models import Attachment, Message
from inbox_service.core.db import SessionMaker, transaction
from inbox_service.ingest.mime import parse_message
from inbox_service.ingest.store import InboxContext, Incoming, store_batch
from tests.conftest import Team

BIDI = re.compile("[\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# How each hostile name is written into the mail's Content-Disposition.
HOSTILE = {
    "traversal": 'filename="../../etc/passwd"',
    "windows traversal": 'filename="..\\\\..\\\\windows\\\\win.ini"',
    "absolute": 'filename="/etc/shadow"',
    "rfc2231 traversal": "filename*=UTF-8''..%2F..%2Fetc%2Fpasswd",
    "nul": "filename*=UTF-8''evil%00.txt",
    "crlf": "filename*=UTF-8''a%0D%0AContent-Type%3A%20text%2Fhtml%0D%0A%0D%0A%3Cscript%3E.txt",
    "encoded word crlf": 'filename="=?UTF-8?Q?a=0D=0ASet-Cookie:_x=3D1.txt?="',
    "rtl override": "filename*=UTF-8''invoice%E2%80%AEfdp.exe",
    "very long": f'filename="{"a" * 3000}.pdf"',
    "quotes and semicolons": 'filename="x\\";filename=evil.html;a=\\".txt"',
    "dots only": 'filename=".."',
}


def mail_with(parts: list[tuple[str, str, bytes]]) -> bytes:
    """A multipart mail with one attachment per (content type, disposition params, data)."""
    lines = [
        "From: Mallory <mallory@attacker.test>",
        "To: support@example.com",
        "Subject: Files",
        "Message-ID: <files@attacker.test>",
        "MIME-Version: 1.0",
        'Content-Type: multipart/mixed; boundary="b"',
        "",
        "--b",
        "Content-Type: text/plain",
        "",
        "see attached",
    ]
    for content_type, params, data in parts:
        lines += [
            "--b",
            f"Content-Type: {content_type}",
            f"Content-Disposition: attachment; {params}",
            "",
            data.decode(),
        ]
    lines.append("--b--")
    return "\r\n".join(lines).encode()


async def store(db: SessionMaker, inbox_id: str, raw: bytes) -> list[Attachment]:
    async with transaction(db) as session:
        await store_batch(
            session,
            InboxContext(inbox_id=inbox_id, team_addresses=frozenset()),
            [Incoming(raw=raw, parsed=parse_message(raw))],
            now=datetime(2026, 1, 5, 9, tzinfo=UTC),
        )
        message = (await session.scalars(select(Message).where(Message.inbox_id == inbox_id))).one()
        found = await session.scalars(
            select(Attachment).where(Attachment.message_id == message.id).order_by(Attachment.id)
        )
        return list(found)


def disposition_names(header: str) -> tuple[str, str | None]:
    """The `filename` and decoded `filename*` of a Content-Disposition, as a client reads it."""
    parsed = EmailMessage()
    parsed["Content-Disposition"] = header
    plain = parsed.get_param("filename", header="content-disposition")
    assert isinstance(plain, str), header
    star = re.search(r"filename\*=UTF-8''([^;\s]*)", header)
    return plain, unquote(star.group(1)) if star else None


def assert_safe_name(name: str, where: str) -> None:
    assert name, where
    assert "/" not in name, (where, name)
    assert "\\" not in name, (where, name)
    assert name not in {".", ".."}, (where, name)
    assert not re.search(r"[\x00-\x1f\x7f]", name), (where, name)
    assert not BIDI.search(name), (where, name)
    assert len(name) <= 255, (where, len(name))


async def test_hostile_names_download_as_bare_safe_file_names(
    client: httpx.AsyncClient, db: SessionMaker, team: Team
) -> None:
    raw = mail_with([("application/octet-stream", p, kind.encode()) for kind, p in HOSTILE.items()])
    stored = {bytes(a.data or b"").decode(): a for a in await store(db, team.inbox_a, raw)}
    assert set(stored) == set(HOSTILE)
    names: dict[str, str] = {}
    for kind, attachment in stored.items():
        response = await client.get(f"/v1/attachments/{attachment.id}", headers=team.agent_headers)
        assert response.status_code == 200, (kind, response.text)
        assert response.content == kind.encode()
        header = response.headers["content-disposition"]
        assert header.isascii(), (kind, header)
        assert header.isprintable(), (kind, header)
        assert header.startswith("attachment;"), (kind, header)
        assert response.headers["x-content-type-options"] == "nosniff"
        plain, star = disposition_names(header)
        assert_safe_name(plain, kind)
        assert star is not None, (kind, header)
        assert_safe_name(star, kind)
        names[kind] = star
        # the JSON view of the message reports the stored name as plain JSON text
        message = await client.get(
            f"/v1/messages/{attachment.message_id}", headers=team.agent_headers
        )
        assert message.headers["content-type"] == "application/json"
    # Safe, and still recognisable: the last path segment and the extension survive.
    assert names["traversal"] == "passwd"
    assert names["windows traversal"] == "win.ini"
    assert names["rtl override"] == "invoicefdp.exe"
    assert names["very long"].endswith(".pdf")


@pytest.mark.parametrize(
    "content_type",
    [
        "text/html",
        "TEXT/HTML; charset=utf-8",
        "image/svg+xml",
        "application/xhtml+xml",
        "text/xml",
        "application/xml",
        "application/javascript",
        "text/javascript",
        "multipart/related",
        "text/html\r\nX-Injected: 1",
    ],
)
async def test_active_content_is_never_served_as_itself(
    client: httpx.AsyncClient, db: SessionMaker, team: Team, content_type: str
) -> None:
    script = b"<script>alert(document.cookie)</script><svg onload=alert(1)>"
    async with transaction(db) as session:
        attachments = await store(
            db, team.inbox_a, mail_with([("text/plain", 'filename="page.html"', script)])
        )
        [attachment] = attachments
        row = await session.get_one(Attachment, attachment.id)
        row.content_type = content_type  # whatever the parser made of the sender's claim
    response = await client.get(f"/v1/attachments/{attachment.id}", headers=team.agent_headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["content-disposition"].startswith("attachment;")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in response.headers["content-security-policy"]
    assert "x-injected" not in response.headers


async def test_harmless_types_keep_their_type(
    client: httpx.AsyncClient, db: SessionMaker, team: Team
) -> None:
    """Guards the guard: the refusal above is about the type, not every download."""
    [attachment] = await store(
        db, team.inbox_a, mail_with([("application/pdf", 'filename="a.pdf"', b"%PDF-1.4")])
    )
    response = await client.get(f"/v1/attachments/{attachment.id}", headers=team.agent_headers)
    assert response.headers["content-type"] == "application/pdf"
