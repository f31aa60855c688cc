"""Header injection through replies: a CR, LF or NUL in anything that ends up in a header
(recipient names and addresses, rendered template subjects, the sender's display name),
raw or hidden in an RFC 2047 encoded word, is a 422 and no mail leaves. Mail goes to a
real SMTP server (aiosmtpd), and the sender runs after each attempt to prove it."""

from __future__ import annotations

from email import message_from_bytes, policy
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from inbox_service.contacts.models import Contact
from inbox_service.conversations.models import Conversation
from inbox_service.core.db import SessionMaker, transaction
from inbox_service.inboxes.models import Inbox
from inbox_service.replies.models import Reply
from inbox_service.replies.sender import ReplySender
from inbox_service.users.models import User
from tests.conftest import Team
from tests.replies.conftest import Thread, sender, sink, thread
from tests.replies.smtp_sink import SmtpSink

__all__ = ["sender", "sink", "thread"]

EVIL = "evil@attacker.test"
BREAKS = {
    "crlf": f"Ana\r\nBcc: {EVIL}",
    "lf": f"Ana\nBcc: {EVIL}",
    "cr": f"Ana\rBcc: {EVIL}",
    "nul": "Ana\x00Bcc",
    "encoded word": f"=?UTF-8?Q?Ana=0D=0ABcc:_{EVIL}?=",
    "encoded word, base64": "=?UTF-8?B?QW5hDQpCY2M6IGV2aWxAYXR0YWNrZXIudGVzdA==?=",
}
# PostgreSQL text cannot hold NUL, so stored names carry every kind of break but that one.
STORED_BREAKS = {kind: value for kind, value in BREAKS.items() if kind != "nul"}


async def replies_count(db: SessionMaker) -> int:
    async with transaction(db) as session:
        return await session.scalar(select(func.count()).select_from(Reply)) or 0


async def refused(
    client: httpx.AsyncClient,
    team: Team,
    thread: Thread,
    db: SessionMaker,
    sender: ReplySender,
    sink: SmtpSink,
    body: dict[str, Any],
) -> dict[str, Any]:
    """Post the reply; it must be a 422 that stores nothing and sends nothing."""
    before = await replies_count(db)
    response = await client.post(
        f"/v1/conversations/{thread.conversation_id}/replies",
        json={"body_text": "Hello", "send_at": None, **body},
        headers=team.agent_headers,
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert await replies_count(db) == before
    await sender.run_once()
    assert sink.received == []
    problem: dict[str, Any] = response.json()
    return problem


@pytest.mark.parametrize("value", BREAKS.values(), ids=BREAKS.keys())
@pytest.mark.parametrize("field", ["to", "cc"])
async def test_line_breaks_in_recipient_names(
    client: httpx.AsyncClient,
    team: Team,
    thread: Thread,
    db: SessionMaker,
    sender: ReplySender,
    sink: SmtpSink,
    field: str,
    value: str,
) -> None:
    recipient = {"address": "ana@customer.test", "name": value}
    body: dict[str, Any] = {field: [recipient]}
    if field == "cc":
        body["to"] = [{"address": "ana@customer.test"}]
    await refused(client, team, thread, db, sender, sink, body)


@pytest.mark.parametrize(
    "address",
    [
        f"ana@customer.test\r\nBcc: {EVIL}",
        f"ana@customer.test\nBcc: {EVIL}",
        "ana@customer.test\x00",
        f"ana@customer.test, {EVIL}",
        f"Ana <ana@customer.test>, {EVIL}",
    ],
)
@pytest.mark.parametrize("field", ["to", "cc"])
async def test_hostile_recipient_addresses(
    client: httpx.AsyncClient,
    team: Team,
    thread: Thread,
    db: SessionMaker,
    sender: ReplySender,
    sink: SmtpSink,
    field: str,
    address: str,
) -> None:
    body: dict[str, Any] = {field: [{"address": address}]}
    if field == "cc":
        body["to"] = [{"address": "ana@customer.test"}]
    await refused(client, team, thread, db, sender, sink, body)


async def test_a_subject_field_is_no_way_in(
    client: httpx.AsyncClient,
    team: Team,
    thread: Thread,
    db: SessionMaker,
    sender: ReplySender,
    sink: SmtpSink,
) -> None:
    """Replies take their subject from the thread or a template, never from the body."""
    problem = await refused(
        client, team, thread, db, sender, sink, {"subject": f"Hi\r\nBcc: {EVIL}"}
    )
    assert "subject" in str(problem)


async def make_template(client: httpx.AsyncClient, team: Team, subject: str) -> str:
    made = await client.post(
        "/v1/templates",
        json={"name": "Injected", "subject": subject, "body": "Hello {{ contact.name }}"},
        headers=team.admin_headers,
    )
    assert made.status_code == 201, made.text
    template_id: str = made.json()["id"]
    return template_id


@pytest.mark.parametrize("value", BREAKS.values(), ids=BREAKS.keys())
async def test_template_subjects_rendering_line_breaks_from_variables(
    client: httpx.AsyncClient,
    team: Team,
    thread: Thread,
    db: SessionMaker,
    sender: ReplySender,
    sink: SmtpSink,
    value: str,
) -> None:
    template_id = await make_template(client, team, "Your case: {{ vars.topic }}")
    body = {"template_id": template_id, "variables": {"topic": value}, "body_text": None}
    await refused(client, team, thread, db, sender, sink, body)


@pytest.mark.parametrize("value", STORED_BREAKS.values(), ids=STORED_BREAKS.keys())
async def test_template_subjects_rendering_line_breaks_from_stored_names(
    client: httpx.AsyncClient,
    team: Team,
    thread: Thread,
    db: SessionMaker,
    sender: ReplySender,
    sink: SmtpSink,
    value: str,
) -> None:
    """A contact's name is outside data (it came from mail, or an edit)."""
    async with transaction(db) as session:
        conversation = await session.get_one(Conversation, thread.conversation_id)
        await session.execute(
            update(Contact).where(Contact.id == conversation.contact_id).values(name=value)
        )
    template_id = await make_template(client, team, "For {{ contact.name }}")
    body = {"template_id": template_id, "body_text": None}
    await refused(client, team, thread, db, sender, sink, body)


@pytest.mark.parametrize("what", ["agent name", "inbox name"])
async def test_line_breaks_in_the_sender_display_name(
    client: httpx.AsyncClient,
    team: Team,
    thread: Thread,
    db: SessionMaker,
    sender: ReplySender,
    sink: SmtpSink,
    what: str,
) -> None:
    """`From: <agent> via <inbox>` is built from stored names."""
    async with transaction(db) as session:
        if what == "agent name":
            await session.execute(
                update(User).where(User.id == team.agent_id).values(name=BREAKS["crlf"])
            )
        else:
            await session.execute(
                update(Inbox).where(Inbox.id == thread.inbox_id).values(name=BREAKS["crlf"])
            )
    await refused(client, team, thread, db, sender, sink, {})


@pytest.mark.parametrize("field", ["name"])
async def test_names_with_line_breaks_are_refused_where_they_are_entered(
    client: httpx.AsyncClient, team: Team, thread: Thread, field: str
) -> None:
    """Users, inboxes and contacts refuse control characters in names at the API."""
    conversation = await client.get(
        f"/v1/conversations/{thread.conversation_id}", headers=team.agent_headers
    )
    contact_id = conversation.json()["contact"]["id"]
    for method, url in (
        ("PATCH", f"/v1/users/{team.agent_id}"),
        ("PATCH", f"/v1/inboxes/{thread.inbox_id}"),
        ("PATCH", f"/v1/contacts/{contact_id}"),
    ):
        response = await client.request(
            method, url, json={field: BREAKS["crlf"]}, headers=team.admin_headers
        )
        assert response.status_code == 422, (url, response.text)


async def test_a_stored_subject_with_line_breaks_goes_out_as_one_header(
    client: httpx.AsyncClient,
    team: Team,
    thread: Thread,
    db: SessionMaker,
    sender: ReplySender,
    sink: SmtpSink,
) -> None:
    """The thread's subject came from mail: its breaks become spaces, nothing is injected."""
    async with transaction(db) as session:
        await session.execute(
            update(Conversation)
            .where(Conversation.id == thread.conversation_id)
            .values(subject=f"Parcel\r\nBcc: {EVIL}")
        )
    response = await client.post(
        f"/v1/conversations/{thread.conversation_id}/replies",
        json={"body_text": "Hello", "send_at": None},
        headers=team.agent_headers,
    )
    assert response.status_code == 201, response.text
    assert await sender.run_once() >= 1
    [received] = sink.received
    assert received.rcpt_tos == ["ana@customer.test"]
    mail = message_from_bytes(received.raw, policy=policy.default)
    assert mail["Subject"] == f"Re: Parcel Bcc: {EVIL}"
    assert mail["Bcc"] is None
    header_block = received.raw.split(b"\r\n\r\n", 1)[0].decode()
    assert [line for line in header_block.split("\r\n") if EVIL in line] == [
        f"Subject: Re: Parcel Bcc: {EVIL}"
    ]
