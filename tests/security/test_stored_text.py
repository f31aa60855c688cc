"""HTML and script in every text field are stored as given and returned as JSON text;
message HTML is sanitized on output; no route answers with an active content type.

Every free-text field a client or a mail can fill gets the same hostile payload; each
must come back byte-for-byte from its GET, inside `application/json`. Then every GET
operation the app documents is called with the ids of what was stored, and no answer
may be HTML/SVG/XML, and every `html` field anywhere in any answer must be sanitized.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy import select

from inbox_service.conversations.models import Attachment, Conversation, Message
from inbox_service.core.config import Settings
from inbox_service.core.crypto import generate_key
from inbox_service.core.db import SessionMaker, transaction
from inbox_service.ingest.mime import parse_message
from inbox_service.ingest.store import InboxContext, Incoming, store_batch
from tests.conftest import Team
from tests.security.routes import operations

PAYLOAD = "<script>alert('x')</script><img src=x onerror=\"alert(1)\"> & </textarea>"
TAG_PAYLOAD = "<script>alert(1)</script><img src=x onerror=alert(1)>"  # tags: <= 64, no ","
# Through the sanitizer (RELIABILITY §7): the OWASP filter-evasion classics.
XSS_HTML = (
    "<p>Hello</p><script>alert(1)</script>"
    "<img src=x onerror=alert(2)><svg onload=alert(3)></svg>"
    '<a href="javascript:alert(4)">a</a><a href=" JaVaScRiPt:alert(5)">b</a>'
    '<iframe srcdoc="<script>alert(6)</script>"></iframe>'
    '<meta http-equiv="refresh" content="0;url=javascript:alert(7)">'
    '<div style="width: expression(alert(8))">c</div>'
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(9)></style>"
    '<form action="javascript:alert(10)"><button>go</button></form>'
    '<object data="data:text/html;base64,PHNjcmlwdD5hbGVydCgxMSk8L3NjcmlwdD4="></object>'
    '<body onload=alert(12)><base href="javascript:alert(13)//">'
)
ACTIVE_TYPES = re.compile(r"html|svg|xml|javascript")
UNSAFE_HTML = re.compile(
    r"<\s*(script|iframe|object|embed|meta|base|form|svg|math|style)\b|\bon[a-z]+\s*=|"
    r"javascript:|expression\(|srcdoc",
    re.I,
)
STREAM = "/v1/events/stream"


@pytest.fixture
def settings() -> Settings:
    return Settings(
        database_url="postgresql+asyncpg://unused/unused",
        rate_limit_per_minute=0,
        max_body_bytes=64 * 1024,
        inbox_secret_key=SecretStr(generate_key()),
        webhook_allow_private=True,
    )


def hostile_mail() -> bytes:
    return (
        f"From: {PAYLOAD!r} <eve@customer.test>\r\nTo: support@example.com\r\n"
        f"Subject: {PAYLOAD}\r\nMessage-ID: <xss@customer.test>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
        "--b\r\nContent-Type: multipart/alternative; boundary=a\r\n\r\n"
        f"--a\r\nContent-Type: text/plain\r\n\r\n{PAYLOAD}\r\n"
        f"--a\r\nContent-Type: text/html\r\n\r\n{XSS_HTML}\r\n--a--\r\n"
        '--b\r\nContent-Type: text/html\r\nContent-Disposition: attachment; filename="x.html"'
        f"\r\n\r\n{XSS_HTML}\r\n--b--\r\n"
    ).encode()


def strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)


def html_fields(value: Any) -> Iterator[str]:
    """Every string under a key that names HTML (`html`, `html_body`, …)."""
    if isinstance(value, dict):
        for k, v in value.items():
            if "html" in k and isinstance(v, str):
                yield v
            else:
                yield from html_fields(v)
    elif isinstance(value, list):
        for v in value:
            yield from html_fields(v)


class Stored:
    """Ids of what was stored, by path parameter name."""

    def __init__(self) -> None:
        self.ids: dict[str, str] = {}


async def ok(response: httpx.Response, status: int = 201) -> dict[str, Any]:
    assert response.status_code == status, (response.request.url, response.text)
    assert response.headers["content-type"] == "application/json", response.request.url
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture
async def stored(db: SessionMaker, client: httpx.AsyncClient, team: Team) -> Stored:
    """The payload in every free-text field, through the API (or mail, for mail's fields)."""
    admin, s = team.admin_headers, Stored()
    async with transaction(db) as session:
        await store_batch(
            session,
            InboxContext(inbox_id=team.inbox_a, team_addresses=frozenset()),
            [Incoming(raw=hostile_mail(), parsed=parse_message(hostile_mail()))],
            now=datetime(2026, 1, 5, 9, tzinfo=UTC),
        )
        message = (
            await session.scalars(select(Message).where(Message.inbox_id == team.inbox_a))
        ).one()
        conversation = await session.get_one(Conversation, message.conversation_id)
        attachment = (
            await session.scalars(select(Attachment).where(Attachment.message_id == message.id))
        ).one()
    assert conversation.contact_id is not None
    s.ids |= {
        "conversation_id": conversation.id,
        "message_id": message.id,
        "attachment_id": attachment.id,
        "contact_id": conversation.contact_id,
        "inbox_id": team.inbox_a,
    }
    post, patch = client.post, client.patch
    user = await ok(
        await post(
            "/v1/users",
            json={"email": "xss@example.com", "name": PAYLOAD},
            headers=admin,
        )
    )
    s.ids["user_id"] = user["id"]
    await ok(await patch(f"/v1/inboxes/{team.inbox_a}", json={"name": PAYLOAD}, headers=admin), 200)
    tag = await ok(await post("/v1/tags", json={"name": TAG_PAYLOAD}, headers=admin))
    s.ids["tag_id"] = tag["id"]
    s.ids["tag"] = tag["name"]
    await ok(
        await post(
            f"/v1/conversations/{conversation.id}/tags", json={"name": TAG_PAYLOAD}, headers=admin
        ),
        200,
    )
    note = await ok(
        await post(
            f"/v1/conversations/{conversation.id}/notes", json={"body": PAYLOAD}, headers=admin
        )
    )
    s.ids["note_id"] = note["id"]
    template = await ok(
        await post(
            "/v1/templates",
            json={"name": PAYLOAD, "subject": PAYLOAD, "body": PAYLOAD},
            headers=admin,
        )
    )
    s.ids["template_id"] = template["id"]
    await ok(
        await patch(
            f"/v1/contacts/{conversation.contact_id}", json={"name": PAYLOAD}, headers=admin
        ),
        200,
    )
    rule = await ok(
        await post(
            "/v1/priority-rules",
            json={"name": PAYLOAD, "keywords": [PAYLOAD], "tags": [TAG_PAYLOAD]},
            headers=admin,
        )
    )
    s.ids["rule_id"] = rule["id"]
    webhook = await ok(
        await post(
            "/v1/webhooks",
            json={"url": "http://127.0.0.1:9/hook", "events": ["*"], "description": PAYLOAD},
            headers=admin,
        )
    )
    s.ids["webhook_id"] = webhook["id"]
    await ok(await client.put("/v1/me/signature", json={"text": PAYLOAD}, headers=admin), 200)
    key = await ok(await post("/v1/api-keys", json={"name": PAYLOAD}, headers=admin))
    s.ids["key_id"] = key["id"]
    return s


READ_BACK = [
    ("user name", "/v1/users/{user_id}", ["name"]),
    ("inbox name", "/v1/inboxes/{inbox_id}", ["name"]),
    ("note body", "/v1/conversations/{conversation_id}/timeline", PAYLOAD),
    ("template name", "/v1/templates/{template_id}", ["name"]),
    ("template subject", "/v1/templates/{template_id}", ["subject"]),
    ("template body", "/v1/templates/{template_id}", ["body"]),
    ("contact name", "/v1/contacts/{contact_id}", ["name"]),
    ("rule name", "/v1/priority-rules/{rule_id}", ["name"]),
    ("rule keyword", "/v1/priority-rules/{rule_id}", ["keywords", 0]),
    ("webhook description", "/v1/webhooks/{webhook_id}", ["description"]),
    ("message subject", "/v1/messages/{message_id}", ["subject"]),
    ("message text", "/v1/messages/{message_id}", ["text"]),
    ("conversation subject", "/v1/conversations/{conversation_id}", ["subject"]),
    ("signature", "/v1/me/signature", ["text"]),
    ("tag name", "/v1/tags", TAG_PAYLOAD),
    ("conversation tag", "/v1/conversations/{conversation_id}", TAG_PAYLOAD),
    ("api key name", "/v1/api-keys", PAYLOAD),
]


@pytest.mark.parametrize(("field", "path", "where"), READ_BACK, ids=[r[0] for r in READ_BACK])
async def test_the_payload_comes_back_as_given_as_json_text(
    client: httpx.AsyncClient,
    team: Team,
    stored: Stored,
    field: str,
    path: str,
    where: list[str | int] | str,
) -> None:
    url = re.sub(r"{(\w+)}", lambda m: stored.ids[m.group(1)], path)
    response = await client.get(url, headers=team.admin_headers)
    body = await ok(response, 200)
    assert response.headers["x-content-type-options"] == "nosniff"
    if isinstance(where, str):  # this exact string somewhere in the answer
        assert where in set(strings(body)), (field, body)
        return
    value: Any = body
    for step in where:
        value = value[step]
    assert value == PAYLOAD, field


async def test_message_html_is_sanitized_wherever_it_is_returned(
    app: FastAPI, client: httpx.AsyncClient, team: Team, stored: Stored
) -> None:
    message = await ok(
        await client.get(f"/v1/messages/{stored.ids['message_id']}", headers=team.admin_headers),
        200,
    )
    html = message["html"]
    assert "Hello" in html  # the harmless part survives
    assert not UNSAFE_HTML.search(html), html


async def test_no_operation_answers_with_active_content(
    app: FastAPI, client: httpx.AsyncClient, team: Team, stored: Stored
) -> None:
    """Declared and real: no HTML/SVG/XML type in the OpenAPI document or on the wire, and
    every `html` field of every answer is sanitized."""
    declared = {
        content_type
        for op in operations(app, prefix="/")
        for answer in op.spec.get("responses", {}).values()
        for content_type in answer.get("content", {})
    }
    assert declared
    assert not {t for t in declared if ACTIVE_TYPES.search(t)}, declared
    called = 0
    for op in operations(app, prefix="/"):
        if op.method != "GET" or op.path == STREAM:
            continue
        response = await client.get(op.url(stored.ids), headers=team.admin_headers)
        where = str(op)
        assert response.status_code < 500, (where, response.text)
        content_type = response.headers.get("content-type", "")
        assert not ACTIVE_TYPES.search(content_type), (where, content_type)
        if content_type.startswith("application/json") and response.status_code == 200:
            called += 1
            for html in html_fields(response.json()):
                assert not UNSAFE_HTML.search(html), (where, html)
    assert called >= 30
